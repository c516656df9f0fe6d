"""BASS superpixels: valid partitions, adaptivity, attribution guidance, odd sizes, determinism."""

import numpy as np
import pytest
from skimage.measure import label as cc_label

from safeview.errors import ImageError
from safeview.segment import segment
from safeview.segment.bass import _SIMPLE, _infer, _lab_features, bass


def assert_partition(labels: np.ndarray, shape) -> None:
    assert labels.dtype == np.int32 and labels.shape == shape
    k = labels.max() + 1
    assert labels.min() == 0 and np.array_equal(np.unique(labels), np.arange(k))
    assert cc_label(labels + 1, connectivity=1, background=0).max() == k  # one 4-component per label


def flat(h: int = 64, w: int = 96) -> np.ndarray:
    return np.full((h, w, 3), (90, 140, 200), dtype=np.uint8)


def test_simple_point_table():
    n, w_, e, s = 1 << 1, 1 << 3, 1 << 4, 1 << 6
    assert _SIMPLE[n]  # a region end: removable
    assert _SIMPLE[n | w_ | 1]  # a convex corner (N, W and NW)
    assert not _SIMPLE[n | s]  # a one-pixel corridor: removing it cuts the region
    assert not _SIMPLE[0]  # an isolated pixel: removing it deletes the region
    assert not _SIMPLE[255]  # an interior pixel: removing it makes a hole
    assert not _SIMPLE[n | e | (1 << 5)]  # N, E and a separate SW piece


def test_inference_keeps_every_region_4_connected(photo):
    h, w = photo.shape[:2]
    raw = _infer(_lab_features(photo, np.zeros((1, 1), np.float32), 0.0, False), h, w, 15, 0.018, 0.5, 0.5, 15)
    raw = raw.reshape(h, w)
    assert cc_label(raw + 1, connectivity=1, background=0).max() == np.unique(raw).size


def test_partition_is_valid_and_deterministic(photo):
    labels = bass(photo)
    assert_partition(labels, photo.shape[:2])
    assert 5 <= labels.max() + 1 <= 200
    assert np.array_equal(labels, bass(photo))
    assert np.array_equal(labels, bass(photo, seed=7))  # hard-assignment inference ignores the seed


def test_parallel_sweeps_match_one_thread(photo):
    import numba

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = bass(photo)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        assert np.array_equal(one, bass(photo))
    finally:
        numba.set_num_threads(before)


def test_number_of_regions_adapts_to_content(photo):
    k_flat = bass(flat(96, 96)).max() + 1
    k_photo = bass(photo).max() + 1
    assert 3 * k_flat < k_photo
    k_low = bass(photo, alpha=0.01).max() + 1
    k_high = bass(photo, alpha=1000.0).max() + 1
    assert k_low < k_high  # a larger alpha keeps more regions


def test_attribution_edge_becomes_a_boundary():
    image = flat()
    attribution = np.zeros(image.shape[:2], np.float32)
    attribution[:, 45:] = 1.0
    guided = bass(image, attribution)
    assert np.all(guided[:, 44] != guided[:, 45])
    for unguided in (bass(image), bass(image, attribution, attribution_weight=0.0)):
        assert np.mean(unguided[:, 44] != unguided[:, 45]) < 0.5
    via_dispatch = segment(image, method="bass", attribution=attribution)
    assert np.array_equal(via_dispatch, guided)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (2, 2), (13, 17), (31, 29)])
def test_odd_sizes(shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    attribution = rng.random(shape).astype(np.float32)
    assert_partition(bass(image), shape)
    assert_partition(segment(image, method="bass", attribution=attribution), shape)


def test_grayscale_replicated_to_rgb(photo):
    gray = np.round(photo @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    labels = bass(np.repeat(gray[:, :, None], 3, axis=2))
    assert_partition(labels, gray.shape)
    assert labels.max() + 1 >= 5


def test_bad_inputs_raise(photo):
    with pytest.raises(ImageError):
        bass(photo.astype(np.float32))
    with pytest.raises(ImageError):
        bass(photo[:, :, 0])
    with pytest.raises(ValueError):
        bass(photo, np.zeros((3, 3), np.float32))
