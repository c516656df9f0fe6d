"""Shared fixtures: small benign images only (scikit-image's bundled samples and generated arrays)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A benign RGB photo bundled with scikit-image, downscaled to keep tests fast."""
    from skimage import data, transform

    return (transform.resize(data.astronaut(), (96, 96), anti_aliasing=True) * 255).astype(np.uint8)
