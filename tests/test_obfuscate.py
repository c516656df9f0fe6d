import numpy as np
import pytest

from safeview.obfuscate import STYLES, Obfuscator, obfuscate


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((96, 96), bool)
    m[20:50, 30:70] = True
    m[70:80, 5:15] = True
    return m


@pytest.mark.parametrize("style", STYLES)
def test_outside_mask_bit_identical(style, photo, mask):
    original = photo.copy()
    out = obfuscate(photo, mask, style)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    assert np.array_equal(out[~mask], photo[~mask])
    assert np.array_equal(photo, original)  # input untouched
    assert not np.array_equal(out[mask], photo[mask])


@pytest.mark.parametrize("style", ["blur", "mean"])
def test_content_destroyed_inside_mask(style, photo):
    mask = np.ones(photo.shape[:2], bool)
    out = obfuscate(photo, mask, style).astype(float)
    # fine detail (high-frequency energy) is gone at any size
    def detail(a):
        return np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()

    assert detail(out) < 0.35 * detail(photo.astype(float))


def test_pixelate_is_flat_cells(photo):
    out = obfuscate(photo, np.ones(photo.shape[:2], bool), "pixelate", blocks=8)
    cells = out.reshape(8, 12, 8, 12, 3)
    assert (cells == cells[:, :1, :, :1]).all()


def test_blur_is_strong_at_large_size():
    rng = np.random.default_rng(0)
    big = (rng.random((1200, 900, 3)) * 255).astype(np.uint8)
    out = obfuscate(big, np.ones(big.shape[:2], bool), "blur")
    assert out.std() < 0.1 * big.std()


def test_fill_colour_and_mean_per_component(mask):
    image = np.zeros((96, 96, 3), np.uint8)
    image[20:35, 30:70] = 100
    image[35:50, 30:70] = 200
    assert (obfuscate(image, mask, "fill", color=(1, 2, 3))[mask] == (1, 2, 3)).all()
    out = obfuscate(image, mask, "mean")
    assert (out[20:50, 30:70] == 150).all()
    assert (out[70:80, 5:15] == 0).all()


def test_empty_mask_is_identity_and_bad_inputs(photo):
    assert np.array_equal(obfuscate(photo, np.zeros(photo.shape[:2], bool)), photo)
    with pytest.raises(ValueError, match="unknown obfuscation style"):
        Obfuscator("smudge")
    with pytest.raises(ValueError, match="mask shape"):
        obfuscate(photo, np.zeros((3, 3), bool))


def test_cached_frame_follows_the_image(photo):
    ob = Obfuscator("pixelate")
    other = photo[::-1].copy()
    m = np.ones(photo.shape[:2], bool)
    assert np.array_equal(ob(photo, m), obfuscate(photo, m, "pixelate"))
    assert np.array_equal(ob(other, m), obfuscate(other, m, "pixelate"))


@pytest.mark.parametrize("shape, dtype", [((40, 56, 3), np.uint8), ((40, 56), np.uint8), ((40, 56, 4), np.float32)])
def test_compositing_is_boolean_indexing(shape, dtype):
    """The masked copy (OpenCV's) puts exactly the frame's pixels under the mask, for any channel
    count or dtype, on a non-contiguous input too, and leaves the input as it was."""
    rng = np.random.default_rng(3)
    image = (rng.random(shape) * 255).astype(dtype)
    mask = rng.random(shape[:2]) > 0.6
    blur = Obfuscator("blur")
    for source in (image, np.asfortranarray(image)):
        before = source.copy()
        expected = source.copy()
        expected[mask] = blur.frame(source, mask)[mask]
        out = blur(source, mask)
        assert out.shape == source.shape and out.dtype == source.dtype and np.array_equal(out, expected)
        assert np.array_equal(source, before)
