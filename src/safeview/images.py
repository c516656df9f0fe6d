"""Safe image decoding: whatever a user or a platform hands us becomes an H×W×3 uint8 RGB array,
or a one-line :class:`~safeview.errors.ImageError` naming the input and what to do.

Originals are opened read-only and never written; the sha256 of their exact bytes is recorded so
that every result can be tied to the evidence it came from. Limits on bytes and pixels (checked
from the header before decoding) stop decompression bombs; limits on the aspect ratio and on the decoded size stop images that are
cheap to send but expensive to scan (a 1 × 39 M-pixel strip, a 16-bit RGBA canvas).
:func:`probe_image` checks all of them from the header alone, without decoding.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

#: default pixel limit (width × height) — 40 megapixels
MAX_PIXELS = 40_000_000
#: default byte limit of an encoded image — 200 MB
MAX_BYTES = 200 * 1024 * 1024
#: default aspect-ratio limit (long side / short side)
MAX_ASPECT = 32.0
#: default limit of the decoded size of the first frame, in bytes (width × height × bytes per pixel) — 256 MB
MAX_DECODED_BYTES = 256 * 1024 * 1024
#: colour that transparent pixels are composited onto (documented in the README)
BACKGROUND = (255, 255, 255)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".jfif", ".ico"}
)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image and the facts about its original bytes."""

    array: np.ndarray  # H×W×3 uint8 RGB
    sha256: str
    format: str
    mode: str  # the original Pillow mode before conversion
    frames: int  # > 1 for animated images (see ``samples``)
    source: str  # file path, or "<bytes>"
    frame: int = 0  # the frame ``array`` holds
    #: an animated image's other sampled frames (index, H×W×3 uint8), evenly spaced (:data:`FRAME_SAMPLE`)
    samples: tuple[tuple[int, np.ndarray], ...] = field(default=(), compare=False, repr=False)
    #: other renderings of the decoded frames that have transparent pixels (frame index, rendering, H×W×3 uint8),
    #: see ``_transparent_views``
    views: tuple[tuple[int, str, np.ndarray], ...] = field(default=(), compare=False, repr=False)
    rendering: str | None = None  # the rendering ``array`` holds when it is one of ``views``

    @property
    def animated(self) -> bool:
        return self.frames > 1

    @property
    def frame_gap(self) -> int:
        """The longest run of consecutive frames of which none was decoded for the models (the first
        frame always is, ``samples`` the others): 0 when every frame was; content shown for more
        frames in a row than this cannot fall between the checked ones."""
        checked = [0, *(index for index, _ in self.samples), self.frames]
        return max(0, *(b - a - 1 for a, b in zip(checked, checked[1:])))

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])


def _read(source: str | os.PathLike | bytes, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "<bytes>"
    else:
        path = Path(source)
        name = str(path)
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image file; pass image files or let the CLI walk folders")
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageError(f"{name}: {size / 1e6:.0f} MB exceeds the {max_bytes / 1e6:.0f} MB limit; raise the limit or downscale the file")
            with open(path, "rb") as fh:  # read-only: the original is never modified
                data = fh.read(max_bytes + 1)
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file; check the path") from None
        except PermissionError:
            raise ImageError(f"{name}: permission denied; make the file readable") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot be read ({exc.strerror or exc}); check the file") from None
    if len(data) > max_bytes:
        raise ImageError(f"{name}: larger than the {max_bytes / 1e6:.0f} MB limit; raise the limit or downscale the file")
    if not data:
        raise ImageError(f"{name}: empty file; it holds no image")
    return data, name


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8; alpha is composited onto ``background``."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    elif mode == "F":  # the scale is read from the finite pixels: one NaN or inf must not turn a 0..1 image black
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(where=np.isfinite(arr), initial=0) <= 1.0 else 1.0
        gray = np.clip(np.round(np.nan_to_num(arr * scale, nan=0.0, posinf=255.0, neginf=0.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in _ALPHA_MODES:
        return _onto(img.convert("RGBA"), background)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


#: Pillow modes with an alpha channel (a palette image's transparency is converted to one first)
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def _onto(rgba: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """An RGBA image composited onto an opaque ``background``, as RGB uint8."""
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    canvas.alpha_composite(rgba)
    return np.ascontiguousarray(np.asarray(canvas.convert("RGB"), dtype=np.uint8))


def _transparent_views(img: Image.Image, background: tuple[int, int, int]) -> tuple[tuple[str, np.ndarray], ...]:
    """The other renderings of an image with transparent pixels, besides ``_to_rgb``'s composite onto
    ``background``: onto white and onto black (whichever that is not; a dark-mode viewer shows the
    black one) and with the alpha channel dropped (what a re-encoder that ignores alpha shows: the
    stored colours). Content hidden by transparency in one rendering shows in another, so the models
    classify them all (``Safeguard`` scans the most unsafe). Empty for an opaque image."""
    if img.mode == "P" and "transparency" in img.info or img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
    else:
        return ()
    stored = np.asarray(rgba, dtype=np.uint8)
    if stored[..., 3].min() == 255:
        return ()
    views = [(name, _onto(rgba, colour)) for name, colour in (("onto white", (255, 255, 255)), ("onto black", (0, 0, 0)))
             if colour != tuple(background)]
    return (*views, ("alpha dropped", np.ascontiguousarray(stored[..., :3])))


def _decoded(img: Image.Image, background: tuple[int, int, int]) -> tuple[np.ndarray, tuple[tuple[str, np.ndarray], ...]]:
    """One loaded frame, EXIF orientation applied, as ``_to_rgb``'s RGB array and its ``_transparent_views``."""
    shown = ImageOps.exif_transpose(img)
    return _to_rgb(shown, background), _transparent_views(shown, background)


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding any pixel data."""

    width: int
    height: int
    format: str
    mode: str
    frames: int
    sha256: str


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow needs per pixel of ``mode`` once decoded (at least 1)."""
    try:
        return max(1, Image.getmodebands(mode) * (2 if ";16" in mode else 4 if mode in ("I", "F") else 1))
    except (KeyError, ValueError):
        return 4


def _check_header(
    img: Image.Image, name: str, max_pixels: int, max_aspect: float, max_decoded_bytes: int
) -> tuple[int, int]:
    """Refuse ``img`` from its header: zero, too many pixels, too elongated, too large decoded."""
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}×{height} = {width * height / 1e6:.1f} MP exceeds the "
            f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb); raise --max-pixels if it is genuine"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name}: image has zero width or height")
    if max(width, height) / min(width, height) > max_aspect:  # six digits: a ratio just past the limit never reads as it
        raise ImageError(
            f"{name}: {width}×{height} has an aspect ratio of {max(width, height) / min(width, height):.6g}:1, over the "
            f"{max_aspect:g}:1 limit; crop it into pieces of at most {max_aspect:g}:1, or raise --max-aspect if it is genuine"
        )
    decoded = width * height * _bytes_per_pixel(img.mode)
    if decoded > max_decoded_bytes:
        raise ImageError(
            f"{name}: {width}×{height} {img.mode} decodes to {decoded / 2**20:.0f} MiB, over the "
            f"{max_decoded_bytes / 2**20:.0f} MiB limit; downscale it or raise --max-decoded-mb if it is genuine"
        )
    return width, height


def probe_image(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    max_aspect: float = MAX_ASPECT,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
) -> ImageHeader:
    """Check ``source`` against every limit from its header only (Pillow opens lazily, so no pixel
    is decoded): cheap enough for a request handler. Raises :class:`ImageError` like
    :func:`load_image_info`, which still decodes and may find damage the header hides."""
    data, name = _read(source, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limits below decide (_check_header)
            with Image.open(io.BytesIO(data)) as img:
                width, height = _check_header(img, name, max_pixels, max_aspect, max_decoded_bytes)
                return ImageHeader(
                    width=width, height=height, format=img.format or "unknown", mode=img.mode,
                    frames=int(getattr(img, "n_frames", 1) or 1), sha256=hashlib.sha256(data).hexdigest(),
                )
    except ImageError:
        raise
    except _DECODE_ERRORS as exc:
        raise _decode_error(name, exc) from None


#: what Pillow raises for a bomb, an unknown format or damaged data
_DECODE_ERRORS = (
    Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
)


def _decode_error(name: str, exc: BaseException) -> ImageError:
    """The one-line :class:`ImageError` of a Pillow failure (one of ``_DECODE_ERRORS``)."""
    if isinstance(exc, Image.DecompressionBombError):  # Pillow's own hard limit, twice its warning's, before any of ours
        return ImageError(
            f"{name}: refused as a possible decompression bomb ({exc}); that is Pillow's hard limit, which no "
            f"SafeView option lifts: downscale the image"
        )
    if isinstance(exc, UnidentifiedImageError):
        return ImageError(f"{name}: not a recognised image file; pass a JPEG, PNG, GIF, WebP, BMP or TIFF")
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ImageError(f"{name}: damaged or truncated image ({reason}); re-export or re-download the file")


def load_image_info(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    max_aspect: float = MAX_ASPECT,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
    background: tuple[int, int, int] = BACKGROUND,
) -> LoadedImage:
    """Decode ``source`` (a path or encoded bytes) into a :class:`LoadedImage`.

    The limits (bytes, pixels, aspect ratio, decoded size) are checked from the header first. EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and alpha images become RGB
    (alpha composited onto ``background``, white by default); an animated image gives its first
    frame (``frames`` says how many it has). Raises :class:`ImageError` for anything else.
    """
    data, name = _read(source, max_bytes)
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limits below decide (_check_header)
            img = Image.open(io.BytesIO(data))
            _check_header(img, name, max_pixels, max_aspect, max_decoded_bytes)
            frames = int(getattr(img, "n_frames", 1) or 1)
            if frames > 1:
                img.seek(0)
            original_mode = img.mode
            fmt = img.format or "unknown"
            img.load()
            array, first_views = _decoded(img, background)
            budget = max_decoded_bytes - array.nbytes - sum(view.nbytes for _, view in first_views)
            samples, views = _sampled_frames(img, frames, array.shape, budget, background)
    except ImageError:
        raise
    except _DECODE_ERRORS as exc:
        raise _decode_error(name, exc) from None
    return LoadedImage(array=array, sha256=sha256, format=fmt, mode=original_mode, frames=frames, source=name, samples=samples,
                       views=(*((0, view_name, view) for view_name, view in first_views), *views))


#: frames of an animated image decoded besides the first, evenly spaced up to the last: the models
#: classify them all and the scan runs on the one they find most unsafe, so content that appears
#: only in a later frame is not passed as safe on the strength of the first. 63 covers every frame
#: of an animation of up to 64 (most stickers and memes); in a longer one, content shown for more
#: than ``frames / 63`` frames in a row is always seen (``LoadedImage.frame_gap`` says the bound)
FRAME_SAMPLE = 63
#: pixels an animation's frames may cost to decode in all (frame by frame, as formats that store
#: differences between frames must be read; about 11 ms per megapixel here): frames past it are not
#: sampled, so a file of thousands of large frames cannot stall a scan (``frame_gap`` counts them)
FRAME_DECODE_PIXELS = 400_000_000


def _sampled_frames(
    img: Image.Image, frames: int, shape: tuple[int, ...], budget: int, background: tuple[int, int, int]
) -> tuple[tuple[tuple[int, np.ndarray], ...], tuple[tuple[int, str, np.ndarray], ...]]:
    """Up to :data:`FRAME_SAMPLE` later frames of ``img`` as (index, RGB array) of the first frame's
    ``shape``, evenly spaced over those within :data:`FRAME_DECODE_PIXELS`, and within ``budget``
    decoded bytes (their ``_transparent_views`` included, returned second as (index, rendering,
    array)); sampling stops at a frame that fails to decode (a truncated animation keeps the frames
    before it) or does not match the first frame's size."""
    samples: list[tuple[int, np.ndarray]] = []
    views: list[tuple[int, str, np.ndarray]] = []
    reachable = min(frames, max(1, FRAME_DECODE_PIXELS // (shape[0] * shape[1])))  # decoding frame k reads those before it
    if reachable < 2:
        return (), ()
    wanted = np.unique(np.linspace(0, reachable - 1, min(reachable, FRAME_SAMPLE + 1)).round().astype(int))[1:]
    for index in wanted:
        if budget < int(np.prod(shape)):
            break
        try:
            img.seek(int(index))
            img.load()
            frame, frame_views = _decoded(img, background)
        except _DECODE_ERRORS:
            break
        if frame.shape != tuple(shape):
            break
        samples.append((int(index), frame))
        views.extend((int(index), view_name, view) for view_name, view in frame_views)
        budget -= frame.nbytes + sum(view.nbytes for _, view in frame_views)
    return tuple(samples), tuple(views)


def load_image(source: str | os.PathLike | bytes, **limits) -> np.ndarray:
    """Decode ``source`` into an H×W×3 uint8 RGB array (see :func:`load_image_info`)."""
    return load_image_info(source, **limits).array


def load_array(image: np.ndarray) -> LoadedImage:
    """An in-memory image, H×W (gray) or H×W×3/4 uint8, as a :class:`LoadedImage` of H×W×3 uint8 RGB
    whose sha256 is of those pixels; an H×W×4 one with transparent pixels also gets the other renderings a file
    with them gets (``views``), so a scan of the array sees what transparency would hide."""
    import hashlib

    array = _checked_array(image)
    if array.shape[2] == 4:
        rgba = Image.fromarray(array, "RGBA")
        rgb = _to_rgb(rgba, BACKGROUND)
        views = tuple((0, name, view) for name, view in _transparent_views(rgba, BACKGROUND))
        return LoadedImage(rgb, hashlib.sha256(rgb.tobytes()).hexdigest(), "array", "RGBA", 1, "<array>", views=views)
    return LoadedImage(array, hashlib.sha256(array.tobytes()).hexdigest(), "array", "RGB", 1, "<array>")


def _checked_array(image: np.ndarray) -> np.ndarray:
    """``image`` as H×W×3 or H×W×4 uint8, or a one-line :class:`ImageError`."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ImageError(f"in-memory image has dtype {array.dtype}; pass uint8 RGB")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape[:2]:
        raise ImageError(f"in-memory image has shape {array.shape}; pass H×W×3 uint8 RGB")
    return np.ascontiguousarray(array)


#: longest side CSE works on by default: larger images are searched on a scaled copy and the mask
#: mapped back to full resolution (the classifiers see 224-pixel inputs; a 40 MP search would only
#: cost more without deciding differently)
WORKING_SIDE = 1024


def working_copy(image: np.ndarray, side: int | None) -> np.ndarray:
    """``image`` itself when its longest side is at most ``side`` (or ``side`` is None), else a
    copy scaled down (area averaging) so that it is."""
    h, w = image.shape[:2]
    if side is None or max(h, w) <= side:
        return image
    import cv2

    scale = side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def full_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A mask found on a :func:`working_copy` mapped to the full-resolution ``shape``: every full
    pixel that any masked working pixel touches is masked (so nothing found is left uncovered by
    the rounding), and nothing else."""
    if mask.shape == tuple(shape):
        return mask
    import cv2

    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) > 0
