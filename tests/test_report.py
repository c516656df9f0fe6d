"""The reviewer's views (safeview.report.render_views): every one but the obfuscated output is
drawn over a blurred thumbnail, and the original itself is shown only when asked."""

from __future__ import annotations

import cv2
import numpy as np

from safeview.pipeline import Safeguard
from safeview.report import render_views, thumbnail


def _detail(image: np.ndarray) -> float:
    """How much fine detail an image shows: the median magnitude of its Laplacian (drawn outlines
    are thin, so they barely move the median)."""
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.median(np.abs(cv2.Laplacian(gray, cv2.CV_32F))))


def test_no_view_shows_the_original_unblurred_unless_asked(red_classifier, red_scene):
    image, _ = red_scene
    result = Safeguard([red_classifier], attributes=()).scan(image, protect=[{"box": [0, 60, 30, 90], "label": "face"}])
    views = render_views(result)
    assert set(views) == {"blurred", "obfuscated", "heatmap-0", "regions-0", "evidence"}
    sharp = _detail(thumbnail(image))
    assert sharp > 5
    for name, view in views.items():
        if name != "obfuscated":  # the output itself is the original outside its mask
            assert _detail(view) < 0.2 * sharp, name
    assert np.array_equal(render_views(result, originals="full")["original"], image)
