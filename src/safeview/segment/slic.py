"""SLIC superpixels (Achanta et al. 2010) from scikit-image, at the paper's settings (25 segments, compactness 1)."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import slic as _slic


def slic(
    image: np.ndarray,
    attribution: np.ndarray | None = None,
    *,
    n_segments: int = 25,
    compactness: float = 1.0,
    sigma: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """k-means superpixels in Lab+xy; ``attribution`` is ignored (SLIC is not classifier-informed)."""
    del attribution, seed  # SLIC is deterministic and uninformed
    return _slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0)
