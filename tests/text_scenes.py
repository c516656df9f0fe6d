"""Benign test scenes with drawn words: scikit-image's bundled photos with text rendered by OpenCV,
and the exact pixels the text covers (the ground truth an OCR box must overlap)."""

from __future__ import annotations

import cv2
import numpy as np


def photo(size: tuple[int, int] = (224, 224), name: str = "astronaut") -> np.ndarray:
    """A bundled benign photo resized to ``size`` (width, height); the astronaut holds no text the
    OCR reads at 224² or 512²."""
    from skimage import data

    return cv2.resize(getattr(data, name)(), size, interpolation=cv2.INTER_AREA)


def draw_text(image: np.ndarray, text: str, org: tuple[int, int], height: int, *, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with ``text`` drawn in white with a black outline, its baseline starting at
    ``org`` (x, y), capital letters about ``height`` pixels tall, rotated by ``angle`` degrees
    about ``org``; returns the new image and the boolean mask of the drawn pixels."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = height / cv2.getTextSize("H", font, 1.0, 1)[0][1]
    thickness = max(1, round(height / 10))
    layer = np.zeros(image.shape[:2], np.uint8)
    cv2.putText(layer, text, org, font, scale, 255, thickness + 2 * max(1, thickness // 2), cv2.LINE_AA)  # outline
    core = np.zeros_like(layer)
    cv2.putText(core, text, org, font, scale, 255, thickness, cv2.LINE_AA)
    if angle:
        rotation = cv2.getRotationMatrix2D((float(org[0]), float(org[1])), angle, 1.0)
        size = (image.shape[1], image.shape[0])
        layer, core = (cv2.warpAffine(m, rotation, size) for m in (layer, core))
    out = image.copy()
    out[layer > 127] = 0
    out[core > 127] = 255
    return out, layer > 127
