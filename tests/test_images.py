import hashlib
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from safeview.errors import ImageError
from safeview.images import load_array, load_image, load_image_info


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rgb_png_round_trip_and_sha(tmp_path, photo):
    path = tmp_path / "a.png"
    path.write_bytes(_png(Image.fromarray(photo)))
    info = load_image_info(path)
    assert info.array.dtype == np.uint8 and info.array.shape == photo.shape
    assert np.array_equal(info.array, photo)
    assert info.sha256 == _sha(path)
    assert info.format == "PNG" and info.frames == 1 and not info.animated


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "LA", "RGBA", "I;16", "I", "F"])
def test_every_mode_becomes_rgb_uint8(mode, photo):
    img = Image.fromarray(photo)
    if mode == "I;16":
        img = Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257))
        assert img.mode.startswith("I;16")
        data = _png(img)
    elif mode in ("I", "F"):
        img = Image.fromarray(np.asarray(img.convert("L"), np.int32 if mode == "I" else np.float32))
        data = _png(img, format="TIFF")
    else:
        img = img.convert(mode)
        data = _png(img, format="TIFF" if mode == "CMYK" else "PNG")
    array = load_image(data)
    assert array.dtype == np.uint8 and array.shape == photo.shape


def test_sixteen_bit_scaled_not_clipped(photo):
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    img = Image.fromarray(gray.astype(np.uint16) * 257)
    array = load_image(_png(img))
    assert np.abs(array[..., 0].astype(int) - gray).max() <= 1


def test_alpha_composited_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red-ish, bottom fully transparent
    array = load_image(_png(Image.fromarray(rgba, "RGBA")))
    assert tuple(array[0, 0]) == (200, 0, 0)
    assert tuple(array[7, 7]) == (255, 255, 255)


def test_exif_orientation_applied():
    img = Image.new("RGB", (20, 10), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    array = load_image(_png(img, format="JPEG", exif=exif.tobytes()))
    assert array.shape[:2] == (20, 10)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    info = load_image_info(buf.getvalue())
    assert info.frames == 3 and info.animated
    assert info.array[8, 8, 0] > 200 and info.array[8, 8, 1] < 50


def test_not_an_image_names_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello, not an image")
    with pytest.raises(ImageError, match="notes.jpg: not a recognised image"):
        load_image(path)


def test_truncated_image(tmp_path, photo):
    data = _png(Image.fromarray(photo), format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    before = _sha(path)
    with pytest.raises(ImageError, match="cut.jpg: damaged or truncated"):
        load_image(path)
    assert _sha(path) == before  # the original is never touched


def test_pixel_limit_and_bomb(tmp_path):
    big = Image.new("L", (3000, 3000))
    path = tmp_path / "big.png"
    big.save(path)
    with pytest.raises(ImageError, match="big.png: .*exceeds the 1 MP limit"):
        load_image(path, max_pixels=1_000_000)
    assert load_image(path).shape == (3000, 3000, 3)


def test_our_pixel_limit_decides_below_pillows_hard_limit(tmp_path, monkeypatch):
    """Pillow warns of a bomb at MAX_IMAGE_PIXELS and refuses at twice that: between the two,
    ``max_pixels`` decides (a raised --max-pixels must work); above, the error says that no
    SafeView option lifts Pillow's limit instead of advising --max-pixels."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    Image.new("L", (1200, 1200)).save(tmp_path / "warned.png")
    Image.new("L", (1500, 1500)).save(tmp_path / "refused.png")
    assert load_image(tmp_path / "warned.png", max_pixels=5_000_000).shape == (1200, 1200, 3)
    with pytest.raises(ImageError, match="warned.png: .*exceeds the 1 MP limit.*raise --max-pixels"):
        load_image(tmp_path / "warned.png", max_pixels=1_000_000)
    with pytest.raises(ImageError, match="refused.png: refused as a possible decompression bomb .*no SafeView option lifts") as raised:
        load_image(tmp_path / "refused.png", max_pixels=5_000_000)
    assert "--max-pixels" not in str(raised.value)


def test_aspect_limit_message_says_how_far_over_and_what_can_help():
    """Just past the limit the ratio is not rounded down to the limit itself ("32:1, over the 32:1
    limit"), and the advice names what helps: cropping, or the option that raises the limit."""
    assert load_image(_png(Image.new("RGB", (384, 12)))).shape == (12, 384, 3)  # exactly 32:1 is allowed
    with pytest.raises(ImageError, match=r"385×12 has an aspect ratio of 32\.0833:1, over the 32:1 limit") as raised:
        load_image(_png(Image.new("RGB", (385, 12))))
    assert "crop it into pieces of at most 32:1, or raise --max-aspect" in str(raised.value)


def test_byte_limit_empty_missing_and_folder(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    (tmp_path / "x.png").write_bytes(b"\x89PNG" + b"0" * 2000)
    with pytest.raises(ImageError, match="limit"):
        load_image(tmp_path / "x.png", max_bytes=1000)
    with pytest.raises(ImageError, match="<bytes>: larger than the"):  # an upload is held to it too
        load_image((tmp_path / "x.png").read_bytes(), max_bytes=1000)


def test_in_memory_arrays():
    gray = np.full((4, 5), 7, np.uint8)
    assert load_array(gray).array.shape == (4, 5, 3) and load_array(gray).views == ()
    with pytest.raises(ImageError):
        load_array(np.zeros((4, 5, 3), np.float32))
    rgba = np.dstack([np.full((4, 5, 3), 200, np.uint8), np.full((4, 5), 0, np.uint8)])
    loaded = load_array(rgba)  # fully transparent: white composited, the other renderings kept
    assert loaded.array.min() == 255 and {name for _, name, _ in loaded.views} == {"onto black", "alpha dropped"}
    assert load_array(np.dstack([rgba[..., :3], np.full((4, 5), 255, np.uint8)])).views == ()  # opaque: none


@pytest.mark.parametrize("shape", [(500, 375), (1000, 1000), (641, 97)])
def test_working_copy_and_full_mask_cover_exactly_what_was_found(shape):
    from safeview.images import full_mask, working_copy

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    work = working_copy(image, 128)
    assert max(work.shape[:2]) == 128 and working_copy(image, None) is image and working_copy(work, 128) is work
    found = np.zeros(work.shape[:2], bool)
    found[rng.integers(0, work.shape[0], 20), rng.integers(0, work.shape[1], 20)] = True
    mask = full_mask(found, shape)
    sy, sx = shape[0] / work.shape[0], shape[1] / work.shape[1]
    for y, x in zip(*np.nonzero(found)):  # every full pixel inside a found working pixel is masked
        assert mask[int(np.ceil(y * sy)) : int((y + 1) * sy), int(np.ceil(x * sx)) : int((x + 1) * sx)].all()
    assert mask.mean() < 4 * sy * sx * found.sum() / mask.size  # and little more


def test_float_image_with_nan_or_inf_keeps_its_scale():
    """One inf pixel in a 0..1 float TIFF used to switch the scale to 0..255, turning the whole
    image black for the classifiers (and NaN cast with a RuntimeWarning)."""
    values = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    hostile = values.copy()
    hostile[0, :5], hostile[0, 5:10] = np.nan, np.inf
    clean = load_image(_png(Image.fromarray(values), format="TIFF"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(_png(Image.fromarray(hostile), format="TIFF"))
    assert np.array_equal(loaded[1:], clean[1:])
    assert (loaded[0, :5] == 0).all() and (loaded[0, 5:10] == 255).all()


def test_an_animation_samples_its_frames_evenly_and_keeps_those_before_damage(tmp_path, monkeypatch):
    """Up to FRAME_SAMPLE later frames, evenly spaced and the last included, each the first's size;
    every frame of a short animation; ``frame_gap`` the longest run of frames left unchecked, the
    frames past the decoding budget included."""
    import safeview.images
    from safeview.images import FRAME_SAMPLE, load_image_info

    frames = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(100)]
    frames[0].save(tmp_path / "long.png", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "short.png", save_all=True, append_images=frames[1:40])
    loaded = load_image_info(tmp_path / "long.png")
    indices = [i for i, _ in loaded.samples]
    assert loaded.frames == 100 and len(indices) == FRAME_SAMPLE and indices[-1] == 99 and 0 not in indices
    assert all(array[0, 0, 0] == i for i, array in loaded.samples)
    assert loaded.frame_gap == 1  # 64 of 100 frames, evenly spaced
    short = load_image_info(tmp_path / "short.png")
    assert [i for i, _ in short.samples] == list(range(1, 40)) and short.frame_gap == 0
    monkeypatch.setattr(safeview.images, "FRAME_DECODE_PIXELS", 8 * 8 * 30)  # frames 0..29 may be decoded
    capped = load_image_info(tmp_path / "long.png")
    assert [i for i, _ in capped.samples] == list(range(1, 30)) and capped.frame_gap == 70
    data = (tmp_path / "long.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) * 2 // 3])
    monkeypatch.undo()
    cut = load_image_info(tmp_path / "cut.png")
    assert cut.array[0, 0, 0] == 0 and 0 < len(cut.samples) < FRAME_SAMPLE  # the frames before the damage
    assert cut.frame_gap == 99 - max(i for i, _ in cut.samples)
    # the decoded-size limit bounds the frames kept with the first: here room for three more
    bounded = load_image_info(tmp_path / "long.png", max_decoded_bytes=4 * 8 * 8 * 3)
    assert [i for i, _ in bounded.samples] == indices[:3]


def test_transparent_pixels_give_the_other_renderings_to_classify():
    """An image whose alpha hides its colours: onto black and with the alpha dropped (the stored
    colours) besides the default composite onto white, for the first frame and each sampled one;
    an opaque image and an opaque alpha channel give none."""
    from safeview.images import load_image_info

    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 0] = 200  # red stored under fully transparent pixels
    loaded = load_image_info(_png(Image.fromarray(rgba, "RGBA")))
    assert (loaded.array == 255).all() and loaded.rendering is None
    views = {name: array for _, name, array in loaded.views}
    assert set(views) == {"onto black", "alpha dropped"}
    assert (views["onto black"] == 0).all() and (views["alpha dropped"] == (200, 0, 0)).all()
    rgba[..., 3] = 255
    assert load_image_info(_png(Image.fromarray(rgba, "RGBA"))).views == ()
    assert load_image_info(_png(Image.fromarray(rgba[..., :3]))).views == ()
    frames = [Image.fromarray(np.dstack([np.full((6, 5, 3), 10 * i, np.uint8), np.zeros((6, 5), np.uint8)]), "RGBA") for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    animated = load_image_info(buffer.getvalue())
    assert sorted({index for index, _, _ in animated.views}) == [0, 1, 2]
    assert all((array == 10 * index).all() for index, name, array in animated.views if name == "alpha dropped")
