"""Felzenszwalb–Huttenlocher graph segmentation from scikit-image, at the paper's settings (scale 500, sigma 0.5, min size 200)."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import felzenszwalb as _felzenszwalb


def felzenszwalb(
    image: np.ndarray,
    attribution: np.ndarray | None = None,
    *,
    scale: float = 500.0,
    sigma: float = 0.5,
    min_size: int = 200,
) -> np.ndarray:
    """Graph-based segmentation on colour; ``attribution`` is ignored."""
    del attribution
    return _felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
