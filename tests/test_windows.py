import numpy as np
import pytest

from safeview.windows import MAX_WINDOWS, WINDOW_ASPECT, Windowed, window_boxes


@pytest.mark.parametrize("shape", [(96, 480), (480, 96), (12, 384), (90, 160), (100, 151), (7, 4000)])
def test_windows_cover_the_long_side_and_stay_few(shape):
    boxes = window_boxes(shape)
    h, w = shape
    assert 2 <= len(boxes) <= MAX_WINDOWS
    covered = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert min(x1 - x0, y1 - y0) == min(h, w)  # the whole short side
        covered[y0:y1, x0:x1] = True
    assert covered.all()


@pytest.mark.parametrize("shape", [(96, 96), (100, 150), (150, 100), (75, 100), (1, 1)])
def test_an_image_within_the_aspect_limit_has_no_windows(shape):
    assert max(shape) <= WINDOW_ASPECT * min(shape) and window_boxes(shape) == []


def test_windowed_prediction_is_the_most_unsafe_view(red_classifier, red_scene, photo):
    """Content beside benign padding, squashed below the threshold in the whole image, is found in
    a window; an image without windows gets the classifier's own prediction."""
    image, _ = red_scene
    wide = np.concatenate([photo, photo, image, photo, photo], axis=1)
    whole = red_classifier.predict_proba(wide[None])[0]
    assert whole[1] < 0.5  # the squashed stand-in is missed by the whole image
    windowed = Windowed(red_classifier)
    assert windowed.predict_proba(wide[None])[0][1] > 0.9 and windowed.name == red_classifier.name
    assert np.array_equal(windowed.predict_proba(image[None]), red_classifier.predict_proba(image[None]))


def test_focus_is_the_window_that_holds_the_content(red_classifier, red_scene, photo):
    """CSE's attribution is computed on the most unsafe view: here the window around the stand-in."""
    image, truth = red_scene
    wide = np.concatenate([photo, photo, image, photo, photo], axis=1)
    x0, y0, x1, y1 = Windowed(red_classifier).focus(wide)
    columns = np.flatnonzero(truth.any(axis=0)) + 2 * photo.shape[1]
    assert x0 <= columns.min() and columns.max() < x1 and (y0, y1) == (0, wide.shape[0])
    assert Windowed(red_classifier).focus(image) is None
