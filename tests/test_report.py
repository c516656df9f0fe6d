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


def test_the_report_says_in_which_views_an_image_was_also_checked(red_classifier, red_scene, tmp_path):
    """A reviewer reading the report learns that an image on a flat canvas was also checked inside
    its borders (and where), and that tiles were used when they were; a plain photo says neither."""
    from safeview.report import report_assets, write_report

    image, _ = red_scene
    canvas = np.full((320, 320, 3), 255, np.uint8)
    canvas[112:208, 200:296] = image
    framed = Safeguard([red_classifier], attributes=(), tiles=True).scan(canvas)
    plain = Safeguard([red_classifier], attributes=()).scan(image)
    entries = [{"result": (d := r.model_dump(mode="json")), "assets": report_assets(d, tmp_path)} for r in (framed, plain)]
    page = write_report(entries, tmp_path / "r.html").read_text()
    assert page.count("also checked inside its borders, x 200–296, y 112–208") == 1
    assert page.count("also checked in 9 tiles") == 1 and "windows" not in page
    x0, y0, x1, y1 = framed.categories[0].seen_in  # the verdict's view, named beside its probability
    assert page.count(f"in the view x {x0}–{x1}, y {y0}–{y1}") == 1
