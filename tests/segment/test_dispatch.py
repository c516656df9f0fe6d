import numpy as np
import pytest
from skimage.measure import label as cc_label

from safeview.segment import METHODS, connected_labels, segment


def assert_valid(labels: np.ndarray, shape) -> None:
    assert labels.dtype == np.int32 and labels.shape == shape
    k = labels.max() + 1
    assert set(np.unique(labels)) == set(range(k))
    for r in range(k):  # every region is one 4-connected component
        assert cc_label(labels == r, connectivity=1).max() == 1


@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "watershed"])
def test_classic_methods_give_connected_regions(method, photo):
    labels = segment(photo, method=method)
    assert_valid(labels, photo.shape[:2])
    assert labels.max() + 1 >= 2


def test_paper_defaults_give_about_25_slic_regions():
    from skimage import data

    labels = segment(data.coffee(), method="slic")
    assert 10 <= labels.max() + 1 <= 60


def test_connected_labels_splits_disconnected_parts():
    labels = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    out = connected_labels(labels)
    assert out.max() + 1 == 5  # four corners + the cross
    assert_valid(out, labels.shape)


def test_dispatch_errors(photo):
    with pytest.raises(ValueError, match="unknown segmentation method"):
        segment(photo, method="nope")
    with pytest.raises(ValueError, match="attribution shape"):
        segment(photo, attribution=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="H×W×3"):
        segment(photo[..., 0])
    assert {"slic", "felzenszwalb", "watershed", "bass", "sam"} <= set(METHODS)


def test_deterministic(photo):
    assert np.array_equal(segment(photo, "slic"), segment(photo, "slic"))


def _merged_ring(noise: float = 6.0, seed: int = 0):
    """A pink ring around a brown centre on a lilac wall; the segmentation merged the ring into
    the wall (label 0), the centre is label 1 and a small grey patch label 2."""
    h = w = 96
    ys, xs = np.mgrid[:h, :w]
    r = np.hypot(ys - 40, xs - 44)
    image = np.empty((h, w, 3))
    image[...] = (190, 172, 205)
    ring, centre = (r >= 9) & (r < 17), r < 9
    image[ring], image[centre] = (232, 150, 172), (120, 72, 50)
    image[80:90, 5:15] = (128, 128, 128)
    image += np.random.default_rng(seed).normal(0, noise, image.shape)
    segments = np.zeros((h, w), np.int32)
    segments[centre], segments[80:90, 5:15] = 1, 2
    return np.clip(image, 0, 255).astype(np.uint8), segments, ring


def test_split_colour_merges_cuts_a_merged_ring_out_of_the_wall():
    from safeview.segment import split_colour_merges

    image, segments, ring = _merged_ring()
    out, cut = split_colour_merges(image, segments, keep={1})
    assert_valid(out, segments.shape)
    labels, counts = np.unique(out[ring], return_counts=True)
    piece = labels[np.argmax(counts)]
    assert piece not in (0, 1, 2) and counts.max() >= 0.95 * ring.sum()  # the ring is one piece
    assert (out == piece)[~ring].mean() < 0.01  # and holds almost nothing of the wall
    assert (out == 0).sum() >= 0.9 * ((segments == 0) & ~ring).sum()  # the wall keeps its label
    assert ((out == 1) == (segments == 1)).all() and ((out == 2) == (segments == 2)).all()  # kept, and too small
    assert {0, int(piece)} <= set(cut) and 1 not in cut and 2 not in cut
    assert np.bincount(out.ravel()).min() > 0.002 * out.size  # no speck of noise became a region


def test_split_colour_merges_leaves_a_plain_region_and_kept_ones_whole():
    from safeview.segment import split_colour_merges

    image, segments, _ = _merged_ring()
    image[...] = image[0, 0]  # no ring, no centre: one colour under noise
    image = np.clip(image + np.random.default_rng(1).normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    out, cut = split_colour_merges(image, segments)
    assert (out == segments).all() and cut == []  # noise is not an edge
    ringed, segments, _ = _merged_ring()
    out, cut = split_colour_merges(ringed, segments, keep={0})
    assert (out == segments).all() and cut == []


def test_split_colour_merges_needs_a_colour_edge_that_is_more_than_specks():
    """One exact colour is never cut, and neither is a region whose other side is only specks,
    even when the region lies in two parts (as protection's cut leaves regions)."""
    from safeview.segment import split_colour_merges

    flat = np.full((60, 60, 3), 120, np.uint8)
    segments = np.zeros((60, 60), np.int32)
    assert split_colour_merges(flat, segments, smoothing=0)[1] == []
    segments[:, 28:32] = 2  # label 0 now lies in two parts, with no colour edge in it
    specked = flat.copy()
    specked[10:12, 10:12] = 255  # a 2×2 speck
    out, cut = split_colour_merges(specked, segments, smoothing=0)
    assert cut == [] and (out == segments).all()
