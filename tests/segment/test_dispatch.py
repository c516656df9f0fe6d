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
