"""The synthetic benchmark: benign backgrounds with drawn stand-ins for the paper's three unsafe
categories, each with an exact ground-truth mask.

The paper evaluates CSE on real sexual, cyberbullying and self-harm images ("Datasets") and asks
the counterfactual search to obfuscate the minimal set of unsafe regions (Def. 2 and the informed
greedy search). Such imagery can never be used here, so each category is replaced by a clearly
synthetic, benign *stand-in* whose pixels are known exactly: the ground truth that an obfuscation
should cover. Safe *distractors* that share the stand-in's shape, colours or text appear in safe and
unsafe images alike, so a classifier has to learn the stand-in itself rather than a colour, a shape
or the mere presence of text.

Stand-ins (what the mask covers) and their distractors, per category:

``sexual``
    stand-in ``rings``: an ellipse filled with concentric elliptical rings alternating pink and
    brown. Mask: every pixel of the ellipse.
    distractors: the same ellipse with a pink/brown ``checker``, ``rings_other`` (concentric rings in
    another colour pair), ``plain`` (one flat pink or brown).
``cyberbullying``
    stand-in ``gesture``: a hand glyph (palm, fingers, thumb, with a dark outline) whose only raised
    finger is the middle one. Mask: every pixel of the glyph, outline included.
    distractors: ``hand_open``, ``hand_fist`` (same palette, outline and size); ``word_benign``, a
    word from :data:`BENIGN_WORDS` in outlined bold text (text is everywhere, so it is no cue).
    A lone raised index finger, a thumbs-up and an insulting-word stand-in were tried and dropped:
    a small demo CNN at 128 px, trained in minutes on two cores, stayed at chance with them.
``self_harm``
    stand-in ``wounds``: a skin-toned, forearm-like capsule crossed by 3-5 red parallel slash marks.
    Mask: every pixel of the capsule, marks included.
    distractors: ``skin_plain``; ``skin_single`` (one red mark); ``skin_lines_other`` (parallel marks
    in blue, black, brown or green); ``lines_no_skin`` (red parallel marks on a grey, blue, white or
    green capsule).

Every recipe but ``train_faces`` and ``train_petals`` uses only these. ``train_faces`` adds ``face``,
a drawn head (skin oval, hair, ears, eyes, brows, nose, mouth, sometimes glasses or a beard), as a
negative for every category: faces are the evidence an investigator needs kept (issue 16), and a
model that learned skin-toned hands must not answer to them. ``train_petals`` adds ``petals``, a
flower head of warm, skin-like petals edged in red arcs, as a negative: a self-harm model that
learned "skin tone crossed by red" called a real orange dahlia unsafe.

Every object is drawn opaque (binary alpha, no blending), distractors first and stand-ins on top, so
the mask is exactly the set of pixels whose colour comes from a stand-in. Each object covers about
3 %-24 % of the image (less when there are several, so that the stand-ins of an unsafe image
together cover 1 %-25 %), is rotated and placed at random, and an image holds 1-3 objects whose count
is distributed the same way in safe and unsafe images.

Backgrounds are crops of real benign photos at many scales, recoloured, or scenes drawn by code
(noise, gradients, shapes, stripes, checkers, cells, scribbles), or two of these side by side. The
photos are split: the demo models train on :data:`TRAIN_PHOTOS` (recipe ``train``, which also
adds bare backgrounds and the other categories' objects as hard negatives), and everything they
are measured on uses the :data:`HELDOUT_PHOTOS` they never saw (recipe ``benchmark``, the
default). Everything is a deterministic function of the seed: the background depends on the seed
and the recipe's photos only, so ``make_sample(c, True, seed=s)`` and ``make_sample(c, False,
seed=s)`` share their background (a paired counterfactual).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .schema import CATEGORIES

#: Friendly words drawn the same way (distractor ``word_benign``).
BENIGN_WORDS: tuple[str, ...] = ("HELLO", "SALE", "LOVE", "HAPPY", "OPEN", "SMILE", "GOOD")

#: Real benign photos that ship inside installed packages (no pooch, no network): name -> where.
#: scikit-image's sample images by function name, scikit-learn's two sample photos, matplotlib's.
REAL_PHOTOS: dict[str, str] = {
    **{name: f"skimage:{name}" for name in (
        "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
        "retina", "stereo_motorcycle", "colorwheel",
        "camera", "moon", "brick", "grass", "gravel", "coins", "page", "text", "clock", "cell",
    )},
    "china": "sklearn:china.jpg",
    "flower": "sklearn:flower.jpg",
    "grace_hopper": "matplotlib:grace_hopper.jpg",
}

#: Photos the demo models never train on: the ``benchmark`` recipe's backgrounds, the demo's
#: benign photos and the false-alarm check on real photos (portraits, a cat, a cup, a landscape,
#: a flower, a building: what a model must leave alone).
HELDOUT_PHOTOS: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "china", "flower", "grace_hopper")

#: Photos the ``train`` recipe draws its backgrounds from (cropped at many scales, recoloured).
TRAIN_PHOTOS: tuple[str, ...] = tuple(name for name in REAL_PHOTOS if name not in HELDOUT_PHOTOS)

#: Mask area, as a fraction of the image, that every unsafe sample satisfies.
MASK_FRACTION_RANGE: tuple[float, float] = (0.01, 0.25)
_OBJECT_FRACTION_MIN = 0.03  # smallest area of one object; the largest is 0.24 / (objects in image)
_MAX_ATTEMPTS = 50

_SKIN = np.array(
    [(255, 219, 172), (241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (233, 180, 150)],
    dtype=float,
)
_PINK = np.array((232, 150, 172), dtype=float)
_BROWN = np.array((122, 74, 54), dtype=float)
_OTHER_PAIRS = np.array(
    [[(70, 110, 200), (240, 220, 90)], [(60, 150, 80), (235, 235, 225)], [(130, 130, 135), (150, 80, 170)],
     [(40, 170, 190), (250, 160, 60)]],
    dtype=float,
)
_TEXT_COLOURS = np.array([(220, 30, 30), (20, 20, 20), (250, 250, 250), (250, 220, 40), (200, 40, 200)], dtype=float)
_LINE_COLOURS = np.array([(40, 60, 170), (25, 25, 25), (110, 70, 40), (40, 120, 60)], dtype=float)
_HAIR = np.array([(40, 28, 20), (90, 60, 35), (200, 165, 100), (140, 140, 140), (20, 20, 22), (150, 70, 40)], dtype=float)
#: a flower head's petals: the skin tones and warm orange, peach and salmon ones
_PETAL_TONES = np.concatenate([_SKIN, [(250, 175, 115), (245, 150, 100), (250, 200, 150), (240, 160, 150)]])
_NON_SKIN = np.array([(200, 200, 205), (170, 200, 230), (245, 245, 240), (150, 190, 140)], dtype=float)

#: hand glyph kind -> (raised finger slots 0=index..3=little, thumb pose)
_HANDS: dict[str, tuple[tuple[int, ...], str]] = {
    "gesture": ((1,), "folded"),
    "hand_open": ((0, 1, 2, 3), "out"),
    "hand_fist": ((), "folded"),
}

Drawn = tuple[np.ndarray, np.ndarray]  # (h, w, 3) uint8 colours, (h, w) bool alpha


@dataclass(frozen=True)
class Placement:
    """One drawn object: its kind, its box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) and whether it is
    the category's unsafe stand-in (``True``) or a safe distractor."""

    kind: str
    box: tuple[int, int, int, int]
    standin: bool


@dataclass(frozen=True, eq=False)
class Sample:
    """A benchmark image with its exact ground truth; ``mask`` is all False when ``unsafe`` is False."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) bool, the stand-in pixels
    category: str
    unsafe: bool
    seed: int
    placements: tuple[Placement, ...]

    @property
    def mask_fraction(self) -> float:
        """Fraction of the image covered by the mask."""
        return float(self.mask.mean())

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Boxes of the stand-ins (empty for a safe sample)."""
        return [p.box for p in self.placements if p.standin]


# --------------------------------------------------------------------------- backgrounds


@lru_cache(maxsize=None)
def real_photo(name: str) -> np.ndarray:
    """One of :data:`REAL_PHOTOS` as an (H, W, 3) uint8 RGB array (grey photos repeated)."""
    if name not in REAL_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(REAL_PHOTOS)}")
    package, _, item = REAL_PHOTOS[name].partition(":")
    if package == "skimage":
        import skimage.data

        image = getattr(skimage.data, item)()
        if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
            image = image[0]
    elif package == "sklearn":
        from sklearn.datasets import load_sample_image

        image = load_sample_image(item)
    else:
        from matplotlib import cbook

        image = np.asarray(Image.open(cbook.get_sample_data(item, asfileobj=False)).convert("RGB"))
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def real_photo_views(names: Sequence[str] = HELDOUT_PHOTOS) -> list[tuple[str, np.ndarray]]:
    """Six views of each real photo, as a person's upload might frame it: the whole photo, its
    centre and its four corners (each 60 % of the side). Returns ``(label, image)`` pairs, the
    label ``name/view``; what false-alarm rates on real photos are measured on."""
    views = []
    for name in names:
        photo = real_photo(name)
        h, w = photo.shape[:2]
        ch, cw = int(0.6 * h), int(0.6 * w)
        corners = {"centre": ((h - ch) // 2, (w - cw) // 2), "top-left": (0, 0), "top-right": (0, w - cw),
                   "bottom-left": (h - ch, 0), "bottom-right": (h - ch, w - cw)}
        views.append((f"{name}/whole", photo))
        views += [(f"{name}/{view}", np.ascontiguousarray(photo[y : y + ch, x : x + cw])) for view, (y, x) in corners.items()]
    return views


def lfw_views() -> list[tuple[str, np.ndarray]]:
    """The 200 small grey photos of scikit-image's LFW subset (100 faces, then 100 other scenes
    from Labeled Faces in the Wild, 25×25, bundled with the package), each a photo of its own
    (label ``lfw-face-007/whole``, ``lfw-other-042/whole``): real photos no demo model trained on,
    far more of them than :data:`HELDOUT_PHOTOS`, though small and grey."""
    import skimage.data

    stack = np.clip(np.asarray(skimage.data.lfw_subset()) * 255, 0, 255).round().astype(np.uint8)
    return [
        (f"lfw-{'face' if i < 100 else 'other'}-{i % 100:03d}/whole", np.ascontiguousarray(np.stack([grey] * 3, axis=-1)))
        for i, grey in enumerate(stack)
    ]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


@lru_cache(maxsize=None)
def _is_grey(name: str) -> bool:
    """Whether a real photo is greyscale (its channels equal), computed once per photo."""
    photo = real_photo(name)
    return bool((photo[..., 0] == photo[..., 1]).all() and (photo[..., 1] == photo[..., 2]).all())


def _recolour(rng: np.random.Generator, image: np.ndarray, *, grey: bool) -> np.ndarray:
    """Colour jitter: a tint for a grey photo, then saturation, contrast, brightness, white balance."""
    image = image.astype(float)
    if grey and rng.random() < 0.6:
        image = image * rng.uniform(0.45, 1.0, size=3) / 0.8
    gray = image.mean(axis=-1, keepdims=True)
    image = gray + (image - gray) * rng.uniform(0.5, 1.4)  # saturation
    image = (image - image.mean()) * rng.uniform(0.7, 1.3) + image.mean()  # contrast
    image = image * rng.uniform(0.75, 1.2) * rng.uniform(0.9, 1.1, size=3)  # brightness, white balance
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _photo_background(rng: np.random.Generator, size: int, photos: Sequence[str]) -> np.ndarray:
    """A crop of a real photo at a random scale (12 %-100 % of its shorter side, so close-ups of
    texture as well as whole scenes), turned, mirrored and recoloured."""
    name = photos[rng.integers(len(photos))]
    photo = real_photo(name)
    h, w = photo.shape[:2]
    side = max(8, int(min(h, w) * math.exp(rng.uniform(math.log(0.12), 0.0))))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    image = np.rot90(photo[y : y + side, x : x + side], int(rng.integers(4)) if rng.random() < 0.3 else 0)
    image = _resize(np.ascontiguousarray(image[:, ::-1] if rng.random() < 0.5 else image), size)
    return _recolour(rng, image, grey=_is_grey(name))


def _procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A scene drawn by code: smooth noise, a gradient, shapes, coloured multi-scale noise, stripes,
    a checker, Voronoi cells or scribbles."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    kind = int(rng.integers(8))
    if kind == 0:  # smooth noise mapped between two colours
        field = gaussian_filter(rng.normal(size=(size, size)), sigma=size * rng.uniform(0.01, 0.1))
        t = (field - field.min()) / (np.ptp(field) + 1e-9)
    elif kind == 3:  # coloured noise, several octaves per channel
        t = None
        image = np.zeros((size, size, 3))
        for octave in range(4):
            sigma = size * 0.12 / 2**octave
            image += gaussian_filter(rng.normal(size=(size, size, 3)), sigma=(sigma, sigma, 0)) * sigma
        image = (image - image.mean((0, 1))) / (image.std((0, 1)) + 1e-9) * rng.uniform(20, 70) + rng.uniform(40, 215, size=3)
    elif kind == 4:  # stripes at a random angle and period
        a = rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi * rng.uniform(2, 24))
        t = np.round(t) if rng.random() < 0.5 else t
    elif kind == 5:  # checker or grid
        period = rng.uniform(0.03, 0.25)
        t = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(float)
    elif kind == 6:  # Voronoi cells, each its own colour
        seeds = rng.uniform(0, 1, size=(int(rng.integers(6, 60)), 2))
        nearest = np.argmin((xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2, axis=-1)
        image = rng.uniform(0, 255, size=(len(seeds), 3))[nearest]
        t = None
    else:  # a linear gradient at a random angle (kinds 1, 2, 7 draw on it)
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * xx + np.sin(a) * yy
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
    if t is not None:
        image = c0 + t[..., None] * (c1 - c0)
    image = image + rng.normal(0, rng.uniform(0, 8), size=(size, size, 3))
    image = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))
    if kind in (2, 7):  # shapes, or scribbled lines and arcs, on the gradient
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(3, 13)):
            x0, y0 = rng.uniform(-0.1, 1.0, size=2) * size
            w, h = rng.uniform(0.05, 0.5, size=2) * size
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            shape = int(rng.integers(3))
            if kind == 7:
                width = int(rng.integers(1, max(2, size // 24)))
                if shape == 0:
                    draw.arc([x0, y0, x0 + w, y0 + h], *sorted(rng.uniform(0, 360, size=2)), fill=colour, width=width)
                else:
                    draw.line([tuple(p) for p in rng.uniform(-0.1, 1.1, size=(int(rng.integers(2, 6)), 2)) * size], fill=colour, width=width)
            elif shape == 0:
                draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
            elif shape == 1:
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
            else:
                points = rng.uniform(-0.1, 1.1, size=(3, 2)) * size
                draw.polygon([tuple(p) for p in points], fill=colour)
    return np.asarray(image)


def make_background(*, seed: int, size: int = 256, photos: Sequence[str] = HELDOUT_PHOTOS) -> np.ndarray:
    """The benign background of every sample with this seed: a crop of one of ``photos`` at a random
    scale, recoloured (50 %), a procedural scene (35 %), or two of these side by side along a random
    line (15 %). Returns (size, size, 3) uint8."""
    rng = np.random.default_rng([seed, 0])

    def one() -> np.ndarray:
        return _photo_background(rng, size, photos) if rng.random() < 0.6 else _procedural_background(rng, size)

    u = rng.random()
    if u < 0.5:
        return _photo_background(rng, size, photos)
    if u < 0.85:
        return _procedural_background(rng, size)
    first, second = one(), one()
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, offset = rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3)
    side = np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5) > offset
    return np.where(side[..., None], first, second)


# --------------------------------------------------------------------------- objects


class _Layer:
    """An RGB canvas and its binary alpha, drawn together with the same Pillow primitive."""

    def __init__(self, width: int, height: int) -> None:
        self.rgb = Image.new("RGB", (width, height))
        self.alpha = Image.new("L", (width, height))
        self._rgb = ImageDraw.Draw(self.rgb)
        self._alpha = ImageDraw.Draw(self.alpha)

    def draw(self, shape: str, xy, colour: np.ndarray, *, outline: np.ndarray | None = None, width: int = 0, **kw) -> None:
        if shape == "rounded_rectangle":  # Pillow cannot round a box thinner than its outline allows
            x0, y0, x1, y1 = xy
            if min(x1 - x0, y1 - y0) < 2 * max(1, width) + 1:
                shape, kw = "rectangle", {k: v for k, v in kw.items() if k != "radius"}
        getattr(self._rgb, shape)(xy, fill=_rgb(colour), outline=None if outline is None else _rgb(outline), width=width, **kw)
        getattr(self._alpha, shape)(xy, fill=255, outline=None if outline is None else 255, width=width, **kw)

    def paint(self, shape: str, xy, colour: np.ndarray, **kw) -> None:
        """Colour only: marks drawn this way are clipped to the shapes already in the alpha."""
        getattr(self._rgb, shape)(xy, fill=_rgb(colour), **kw)

    def arrays(self) -> Drawn:
        return np.array(self.rgb), np.asarray(self.alpha) >= 128


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(np.round(colour), 0, 255))


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float = 14.0) -> np.ndarray:
    return np.clip(colour + rng.uniform(-amount, amount, size=3), 0, 255)


def _pick(rng: np.random.Generator, colours: np.ndarray) -> np.ndarray:
    return _jitter(rng, colours[rng.integers(len(colours))])


def _hand(kind: str, rng: np.random.Generator, side: int) -> Drawn:
    """A hand glyph ``side`` pixels tall: palm, four fingers (raised or folded), thumb, dark outline."""
    raised, thumb = _HANDS[kind]
    w, h = max(4, round(0.62 * side)), max(6, side)
    skin = _pick(rng, _SKIN)
    edge, lw = skin * 0.55, max(1, side // 40)
    layer = _Layer(w, h)

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * (w - 1), y0 * (h - 1), x1 * (w - 1), y1 * (h - 1)]

    layer.draw("rounded_rectangle", box(0.08, 0.46, 0.94, 0.98), skin, outline=edge, width=lw, radius=0.12 * w)
    for slot, (cx, top) in enumerate(zip((0.23, 0.42, 0.61, 0.80), (0.14, 0.04, 0.12, 0.24))):
        y0, y1 = (top, 0.62) if slot in raised else (0.36, 0.6)
        layer.draw("rounded_rectangle", box(cx - 0.09, y0, cx + 0.09, y1), skin, outline=edge, width=lw, radius=0.08 * w)
    thumb_box = {"folded": (0.04, 0.6, 0.52, 0.76), "out": (0.0, 0.36, 0.17, 0.8)}[thumb]
    layer.draw("rounded_rectangle", box(*thumb_box), skin, outline=edge, width=lw, radius=0.08 * w)
    rgb, alpha = layer.arrays()
    if rng.random() < 0.5:  # left or right hand
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    return rgb, alpha


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _word(words: tuple[str, ...], rng: np.random.Generator, side: int) -> Drawn:
    """A word in bold outlined text, ``side`` = font size; colour and outline from one shared palette."""
    word = words[rng.integers(len(words))]
    fill_index, stroke_index = rng.choice(len(_TEXT_COLOURS), size=2, replace=False)
    font = _font(max(6, side))
    stroke = max(1, side // 10)
    x0, y0, x1, y1 = font.getbbox(word, stroke_width=stroke)
    size = (x1 - x0 + 2, y1 - y0 + 2)
    full, inner = Image.new("L", size), Image.new("L", size)
    ImageDraw.Draw(full).text((1 - x0, 1 - y0), word, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    ImageDraw.Draw(inner).text((1 - x0, 1 - y0), word, font=font, fill=255)
    alpha, core = np.asarray(full) >= 128, np.asarray(inner) >= 128
    fill, edge = _jitter(rng, _TEXT_COLOURS[fill_index], 8), _jitter(rng, _TEXT_COLOURS[stroke_index], 8)
    rgb = np.where(core[..., None], fill, edge).round().astype(np.uint8)
    return rgb, alpha


def _ellipse_texture(kind: str, rng: np.random.Generator, side: int) -> Drawn:
    """An ellipse ``side`` pixels wide filled with concentric rings, a checker or one colour."""
    w, h = max(4, side), max(4, round(side * rng.uniform(0.55, 1.0)))
    layer = _Layer(w, h)
    layer.draw("ellipse", [0, 0, w - 1, h - 1], np.zeros(3))
    _, alpha = layer.arrays()
    if kind == "rings_other":
        a, b = (_jitter(rng, c) for c in _OTHER_PAIRS[rng.integers(len(_OTHER_PAIRS))])
    else:
        a, b = _jitter(rng, _PINK), _jitter(rng, _BROWN)
        if rng.random() < 0.5:
            a, b = b, a
    yy, xx = np.mgrid[0:h, 0:w]
    n = rng.integers(2, 5)  # rings across the radius; the other textures use the same period
    period = max(2.0, side / (2 * n))
    if kind in ("rings", "rings_other"):
        radius = np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2))
        second = np.floor(radius * n).astype(int) % 2 == 1
    elif kind == "checker":
        second = (np.floor(xx / period) + np.floor(yy / period)).astype(int) % 2 == 1
    else:  # plain
        second = np.zeros((h, w), bool)
    rgb = np.where(second[..., None], b, a) + rng.normal(0, 3, size=(h, w, 3))
    return np.clip(rgb, 0, 255).round().astype(np.uint8), alpha


def _capsule(kind: str, rng: np.random.Generator, side: int) -> Drawn:
    """A forearm-like capsule ``side`` pixels long, skin-toned or not, with parallel marks across it."""
    w, h = max(6, side), max(4, round(side * rng.uniform(0.32, 0.5)))
    base = _pick(rng, _NON_SKIN if kind == "lines_no_skin" else _SKIN)
    layer = _Layer(w, h)
    layer.draw("rounded_rectangle", [0, 0, w - 1, h - 1], base, radius=(h - 1) / 2)
    marks = {"skin_single": 1, "skin_plain": 0}.get(kind, int(rng.integers(3, 6)))
    colour = _pick(rng, _LINE_COLOURS) if kind == "skin_lines_other" else np.array(
        (rng.uniform(180, 235), rng.uniform(0, 40), rng.uniform(20, 50))
    )
    slant = rng.uniform(-0.5, 0.5)  # shared by all marks: they are parallel
    width = max(1, round(h * rng.uniform(0.08, 0.13)))
    centres = np.linspace(0.25, 0.75, marks) if marks > 1 else rng.uniform(0.3, 0.7, size=marks)
    for c in centres:
        x, y0, y1 = (c + rng.uniform(-0.03, 0.03)) * w, h * rng.uniform(0.12, 0.25), h * rng.uniform(0.75, 0.88)
        dx = slant * (y1 - y0) / 2
        layer.paint("line", [(x - dx, y0), (x + dx, y1)], colour, width=width)
    rgb, alpha = layer.arrays()
    rgb = np.clip(rgb + rng.normal(0, 3, size=rgb.shape), 0, 255).round().astype(np.uint8)
    return rgb, alpha


def _face(rng: np.random.Generator, side: int) -> Drawn:
    """A head ``side`` pixels tall, facing the viewer: hair behind a skin-toned oval with ears, eyes,
    brows, nose and mouth, sometimes glasses or a beard; proportions and colours vary."""
    w, h = max(6, round(side * rng.uniform(0.7, 0.85))), max(8, side)
    skin = _pick(rng, _SKIN)
    hair = _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 10)
    dark, lw = np.array((35.0, 25.0, 25.0)), max(1, side // 40)
    layer = _Layer(w, h)

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * (w - 1), y0 * (h - 1), x1 * (w - 1), y1 * (h - 1)]

    if rng.random() < 0.85:  # hair: a cap over the top, longer on some heads
        layer.draw("ellipse", box(0.02, 0.0, 0.98, rng.uniform(0.55, 0.95)), hair)
    for x in (0.04, 0.84):  # ears
        layer.draw("ellipse", box(x, 0.42, x + 0.12, 0.6), skin)
    layer.draw("ellipse", box(0.1, 0.12, 0.9, 0.98), skin)
    eye_y, gap = rng.uniform(0.45, 0.52), rng.uniform(0.15, 0.2)
    for cx in (0.5 - gap, 0.5 + gap):
        layer.paint("ellipse", box(cx - 0.07, eye_y - 0.035, cx + 0.07, eye_y + 0.035), np.array((245.0, 245.0, 240.0)))
        layer.paint("ellipse", box(cx - 0.03, eye_y - 0.03, cx + 0.03, eye_y + 0.03), dark)
        layer.paint("line", box(cx - 0.09, eye_y - 0.08, cx + 0.09, eye_y - 0.09), hair * 0.6, width=lw + 1)
        if rng.random() < 0.25:  # glasses
            layer.paint("arc", box(cx - 0.11, eye_y - 0.07, cx + 0.11, eye_y + 0.07), dark, start=0, end=360, width=lw)
    layer.paint("line", box(0.5, eye_y + 0.06, 0.48, eye_y + 0.2), skin * 0.75, width=lw)
    mouth_y = rng.uniform(0.76, 0.82)
    if rng.random() < 0.2:  # beard
        layer.paint("chord", box(0.14, 0.55, 0.86, 0.98), hair, start=0, end=180)
    layer.paint("arc", box(0.36, mouth_y - 0.06, 0.64, mouth_y + 0.03), np.array((150.0, 60.0, 60.0)),
                start=int(rng.integers(10, 40)), end=int(rng.integers(140, 170)), width=lw + 1)
    return layer.arrays()


def _petals(rng: np.random.Generator, side: int) -> Drawn:
    """A flower head ``side`` pixels across seen from above: rows of overlapping rounded petals in
    skin-like warm tones, each edged by a darker orange-red arc (curves, no straight marks)."""
    w, h = max(8, side), max(8, round(side * rng.uniform(0.8, 1.0)))
    base = _jitter(rng, _PETAL_TONES[rng.integers(len(_PETAL_TONES))], 12)
    edge = np.array((rng.uniform(190, 240), rng.uniform(60, 120), rng.uniform(30, 70)))
    layer = _Layer(w, h)
    layer.draw("ellipse", [0, 0, w - 1, h - 1], base)
    rows = int(rng.integers(3, 6))
    for ring in range(rows, 0, -1):  # outer rows first, the inner ones on top
        radius = ring / rows * 0.45
        petals = max(5, int(rng.integers(6, 11) * ring / rows + 4))
        size = max(2.0, min(w, h) * rng.uniform(0.07, 0.11) * (0.6 + ring / rows))
        turn = rng.uniform(0, 2 * math.pi)
        for k in range(petals):
            a = turn + 2 * math.pi * k / petals
            cx, cy = w / 2 + math.cos(a) * radius * w, h / 2 + math.sin(a) * radius * h
            colour = base * rng.uniform(0.85, 1.05)
            box = [cx - size, cy - size * 0.8, cx + size, cy + size * 0.8]
            layer.paint("ellipse", box, colour)
            layer.paint("arc", box, edge * rng.uniform(0.85, 1.0), start=int(math.degrees(a)) - 70,
                        end=int(math.degrees(a)) + 70, width=max(1, round(size * 0.25)))
    rgb, alpha = layer.arrays()
    return np.clip(rgb + rng.normal(0, 3, size=rgb.shape), 0, 255).round().astype(np.uint8), alpha


#: category -> (stand-in kinds, distractor kinds); each kind's drawer takes (rng, side).
_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sexual": (("rings",), ("checker", "rings_other", "plain")),
    "cyberbullying": (("gesture",), ("hand_open", "hand_fist", "word_benign",
                                            "word_benign")),
    "self_harm": (("wounds",), ("skin_plain", "skin_single", "skin_lines_other", "lines_no_skin")),
}


def _draw(kind: str, rng: np.random.Generator, side: int) -> Drawn:
    if kind in _HANDS:
        return _hand(kind, rng, side)
    if kind == "word_benign":
        return _word(BENIGN_WORDS, rng, side)
    if kind in ("wounds", "skin_plain", "skin_single", "skin_lines_other", "lines_no_skin"):
        return _capsule(kind, rng, side)
    if kind == "face":
        return _face(rng, side)
    if kind == "petals":
        return _petals(rng, side)
    return _ellipse_texture(kind, rng, side)


def _rotation_range(kind: str) -> float:
    if kind.startswith("word"):
        return 30.0
    if kind in _HANDS:
        return 45.0
    if kind == "face":
        return 25.0
    return 180.0


def _render(kind: str, rng: np.random.Generator, area: float, size: int) -> Drawn:
    """Draw ``kind`` so that it covers about ``area`` pixels, rotated at random and cropped tight."""
    state = rng.bit_generator.state
    side = max(4, round(math.sqrt(area)))
    rgb, alpha = _draw(kind, rng, side)  # first draw measures the fill ratio of this shape at this size
    side = max(4, round(side * math.sqrt(area / max(alpha.sum(), 1))))
    rng.bit_generator.state = state  # the same colours and shape, redrawn at the calibrated size
    rgb, alpha = _draw(kind, rng, side)
    angle = rng.uniform(-1, 1) * _rotation_range(kind)
    rgb = np.asarray(Image.fromarray(rgb).rotate(angle, resample=Image.Resampling.NEAREST, expand=True))
    alpha = np.asarray(Image.fromarray(alpha).rotate(angle, resample=Image.Resampling.NEAREST, expand=True))
    ys, xs = np.nonzero(alpha)
    rgb, alpha = rgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if max(alpha.shape) > size:  # too large to fit: shrink to the image
        scale = size / max(alpha.shape)
        shape = (max(1, int(alpha.shape[1] * scale)), max(1, int(alpha.shape[0] * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(shape, Image.Resampling.NEAREST))
        alpha = np.asarray(Image.fromarray(alpha).resize(shape, Image.Resampling.NEAREST))
    return rgb, alpha


def _paste(image: np.ndarray, occupied: np.ndarray, drawn: Drawn, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Paste opaquely where it overlaps least with what is already drawn (10 random tries)."""
    rgb, alpha = drawn
    h, w = alpha.shape
    size_y, size_x = occupied.shape
    best = None
    for _ in range(10):
        y, x = int(rng.integers(0, size_y - h + 1)), int(rng.integers(0, size_x - w + 1))
        overlap = int((occupied[y : y + h, x : x + w] & alpha).sum())
        if best is None or overlap < best[0]:
            best = (overlap, y, x)
        if overlap == 0:
            break
    _, y, x = best
    region = image[y : y + h, x : x + w]
    region[alpha] = rgb[alpha]
    occupied[y : y + h, x : x + w] |= alpha
    return x, y, x + w, y + h


@dataclass(frozen=True)
class Recipe:
    """How samples are drawn. ``photos``: the real photos backgrounds are cropped from;
    ``empty_safe``: the share of safe samples that are a bare background (no object at all), so a
    model learns that real textures alone are safe; ``cross_negatives``: the chance that an object
    that is not the category's stand-in comes from another category (its stand-ins and
    distractors), so a model of one category learns to leave the others' content alone; ``faces``:
    the chance that such an object is a drawn ``face`` instead; ``petals``: then the chance that it is
    a drawn flower head (``petals``)."""

    photos: tuple[str, ...]
    empty_safe: float = 0.0
    cross_negatives: float = 0.0
    faces: float = 0.0
    petals: float = 0.0


#: ``benchmark``: the images CSE is measured on, the demo's and the tests' (held-out photos, each
#: category's own distractors); ``train``: the demo models' training data (the other photos, bare
#: backgrounds and the other categories' objects as hard negatives); ``train_faces``: ``train``
#: with drawn faces as a fifth of the negative objects (the cyberbullying demo model's last schedule);
#: ``train_petals``: ``train`` with drawn flower heads as a quarter of them (the self-harm model's).
RECIPES: dict[str, Recipe] = {
    "benchmark": Recipe(HELDOUT_PHOTOS),
    "train": Recipe(TRAIN_PHOTOS, empty_safe=0.25, cross_negatives=0.4),
    "train_faces": Recipe(TRAIN_PHOTOS, empty_safe=0.25, cross_negatives=0.4, faces=0.2),
    "train_petals": Recipe(TRAIN_PHOTOS, empty_safe=0.25, cross_negatives=0.4, petals=0.25),
}


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def make_sample(category: str, unsafe: bool, *, seed: int, size: int = 256, recipe: str = "benchmark") -> Sample:
    """One benchmark image of ``category``: with 1-3 stand-ins (and 0-2 other objects) when
    ``unsafe``, with 1-3 distractors otherwise (or none, as the recipe says); the mask is the exact
    stand-in pixels. Deterministic in ``(category, unsafe, seed, size, recipe)``; the background
    depends on ``seed``, ``size`` and the recipe's photos only."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose one of {CATEGORIES}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    plan = _recipe(recipe)
    background = make_background(seed=seed, size=size, photos=plan.photos)
    rng = np.random.default_rng([seed, 1, CATEGORIES.index(category), int(unsafe)])
    standins, distractors = _KINDS[category]
    others = tuple(kind for c in CATEGORIES if c != category for kinds in _KINDS[c] for kind in kinds)

    def negative() -> str:
        if plan.faces and rng.random() < plan.faces:  # (no draw at all for the recipes without faces)
            return "face"
        if plan.petals and rng.random() < plan.petals:
            return "petals"
        pool = others if rng.random() < plan.cross_negatives else distractors
        return pool[rng.integers(len(pool))]

    low, high = MASK_FRACTION_RANGE
    empty = not unsafe and rng.random() < plan.empty_safe
    for _ in range(_MAX_ATTEMPTS):
        total = 0 if empty else int(rng.integers(1, 4))
        n_standins = int(rng.integers(1, total + 1)) if unsafe else 0
        kinds = [negative() for _ in range(total - n_standins)]
        kinds += [standins[rng.integers(len(standins))] for _ in range(n_standins)]  # stand-ins on top
        image, occupied = background.copy(), np.zeros((size, size), bool)
        mask = np.zeros((size, size), bool)
        placements = []
        for index, kind in enumerate(kinds):
            fraction = math.exp(rng.uniform(math.log(_OBJECT_FRACTION_MIN), math.log(0.24 / total)))
            drawn = _render(kind, rng, fraction * size * size, size)
            box = _paste(image, occupied, drawn, rng)
            is_standin = index >= total - n_standins
            if is_standin:
                x0, y0, x1, y1 = box
                mask[y0:y1, x0:x1] |= drawn[1]
            placements.append(Placement(kind, box, is_standin))
        if not unsafe or low <= mask.mean() <= high:
            return Sample(image, mask, category, bool(unsafe), seed, tuple(placements))
    raise RuntimeError(f"could not place stand-ins covering {low:.0%}-{high:.0%} of the image (seed {seed})")


# --------------------------------------------------------------------------- dataset on disk


def _item_seed(seed: int, index: int) -> int:
    """Seeds of the items of ``generate(seed=...)``: distinct within a run, readable in the manifest."""
    return seed * 1_000_000 + index


def generate(
    out_dir: str | Path,
    *,
    n: int,
    seed: int = 0,
    size: int = 256,
    categories: Iterable[str] = CATEGORIES,
    unsafe_fraction: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
    only: Iterable[str] | None = None,
    recipe: str = "benchmark",
) -> Path:
    """Write ``n`` images, split evenly across ``categories`` (the first ones take the remainder), as
    an image-folder dataset per category and return the manifest's path::

        out_dir/<category>/safe/<id>.png      RGB image
        out_dir/<category>/unsafe/<id>.png    RGB image
        out_dir/<category>/masks/<id>.png     stand-in mask of an unsafe image, 8-bit, 255 = stand-in
        out_dir/manifest.json

    ``recipe`` names one of :data:`RECIPES` (``benchmark`` unless you are making training data).
    ``manifest.json`` holds ``generator``, ``seed``, ``size``, ``recipe``, ``n``, ``categories``,
    ``unsafe_fraction``, ``mask_fraction_range`` and ``items``: one object per image with ``id``,
    ``path`` and ``mask`` (relative to ``out_dir``; ``mask`` is null for safe images), ``category``,
    ``label`` (``"safe"``/``"unsafe"``), ``seed`` (``make_sample(category, label == "unsafe",
    seed=seed, size=size)`` reproduces the image), ``mask_fraction`` and ``objects`` (``kind``,
    ``box`` ``[x0, y0, x1, y1]`` exclusive, ``standin``). Within each category
    ``round(count * unsafe_fraction)`` images are unsafe, in a seeded random order.

    ``out_dir`` must be empty or absent; with ``force=True`` files are written over, and files of an
    earlier run that this one does not rewrite stay in place. The same arguments give byte-identical
    files. ``only`` writes just those categories of the run — with the same ids, seeds and labels as
    the whole run — to re-create part of a benchmark without rendering the rest.
    """
    categories = tuple(categories)
    _recipe(recipe)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"unknown categories {unknown}; choose from {CATEGORIES}")
    if n < len(categories) or n >= 1_000_000:
        raise ValueError(f"n must be between {len(categories)} (one per category) and 999999, got {n}")
    if not 0.0 <= unsafe_fraction <= 1.0:
        raise ValueError(f"unsafe_fraction must be in [0, 1], got {unsafe_fraction}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"{out} is not an empty directory; choose a new one or pass force=True to write over it")

    counts = [n // len(categories) + (i < n % len(categories)) for i in range(len(categories))]
    order = np.random.default_rng([seed, 2])
    items, index = [], 0
    wanted = set(categories if only is None else only)
    for category, count in zip(categories, counts):
        labels = np.zeros(count, bool)
        labels[: round(count * unsafe_fraction)] = True
        permuted = order.permutation(labels)
        if category not in wanted:
            index += count
            continue
        for unsafe in permuted:
            item_seed, item_id = _item_seed(seed, index), f"{index:06d}"
            sample = make_sample(category, bool(unsafe), seed=item_seed, size=size, recipe=recipe)
            label = "unsafe" if unsafe else "safe"
            path = out / category / label / f"{item_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample.image).save(path)
            mask_path = None
            if unsafe:
                mask_path = out / category / "masks" / f"{item_id}.png"
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(sample.mask.astype(np.uint8) * 255).save(mask_path)
            items.append({
                "id": item_id,
                "path": path.relative_to(out).as_posix(),
                "category": category,
                "label": label,
                "seed": item_seed,
                "mask": None if mask_path is None else mask_path.relative_to(out).as_posix(),
                "mask_fraction": round(sample.mask_fraction, 6),
                "objects": [{"kind": p.kind, "box": list(p.box), "standin": p.standin} for p in sample.placements],
            })
            index += 1
            if progress is not None:
                progress(index, n)
    manifest = {
        "generator": "safeview.synth",
        "seed": seed,
        "size": size,
        "recipe": recipe,
        "n": n,
        "categories": list(categories),
        "written": [c for c in categories if c in wanted],
        "unsafe_fraction": unsafe_fraction,
        "mask_fraction_range": list(MASK_FRACTION_RANGE),
        "items": items,
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path
