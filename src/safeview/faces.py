"""The built-in face detector for ``--protect-faces``: faces are evidence an investigator needs
(age estimation), so they become protected regions (:mod:`safeview.protect`).

It is scikit-image's multi-block LBP cascade (:class:`skimage.feature.Cascade`) with the frontal
face cascade that scikit-image ships (trained by OpenCV; BSD-3-Clause code, OpenCV's 3-clause
licence for the cascade), so it installs with SafeView and needs no download. Stronger detectors
were checked and left out (bench/README.md, "Protected regions"): OpenCV 5 keeps YuNet's code but
ships no model, MediaPipe's current wheel ships no face model, the BlazeFace package needs
TensorFlow, facenet-pytorch pins torch < 2.3, and NudeNet is AGPL-3.0.
Detection runs on a grey copy of at most :data:`DETECT_SIDE` pixels a side (the cascade's cost
grows with the pixel count), and each box is widened to the whole head around the inner face the
cascade finds.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .protect import ProtectedRegion

#: the detector's name in results
DETECTOR = "skimage-lbp-frontalface"
#: longest side the cascade scans (faces of at least 24 px at that scale are found)
DETECT_SIDE = 384
#: each detection is widened by this share of its side on every side (the cascade's box covers the
#: eyes, nose and mouth; the evidence is the whole face)
MARGIN = 0.2


@lru_cache(maxsize=1)
def _cascade():
    from skimage import data, feature

    return feature.Cascade(data.lbp_frontal_face_cascade_filename())


def detect_faces(image: np.ndarray, *, side: int = DETECT_SIDE, min_neighbours: int = 4) -> list[ProtectedRegion]:
    """Faces in ``image`` (H×W×3 uint8) as protected regions (label ``face``, source ``faces``);
    ``min_neighbours``: overlapping raw detections a face needs (fewer finds more, and more false
    faces). The cascade gives no calibrated score, so none is reported."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if min(grey.shape) < 24:
        return []
    found = _cascade().detect_multi_scale(
        img=grey.astype(np.float32) / 255.0, scale_factor=1.2, step_ratio=1, min_size=(24, 24),
        max_size=grey.shape, min_neighbor_number=min_neighbours,
    )
    faces = []
    for det in found:
        r, c, dh, dw = (det[k] / scale for k in ("r", "c", "height", "width"))
        y0, y1 = max(0, round(r - MARGIN * dh)), min(h, round(r + dh * (1 + MARGIN)))
        x0, x1 = max(0, round(c - MARGIN * dw)), min(w, round(c + dw * (1 + MARGIN)))
        mask = np.zeros((h, w), bool)
        mask[y0:y1, x0:x1] = True
        faces.append(ProtectedRegion(mask, label="face", source="faces", detector=DETECTOR))
    return faces
