"""Shared fixtures: small benign images only (scikit-image's bundled samples and generated arrays)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
from scenes import RedDetector

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download: tests build their tiny models in code
# exports of the tests' models go to a cache of their own, never the user's
os.environ["SAFEVIEW_CACHE_DIR"] = tempfile.mkdtemp(prefix="safeview-test-cache-")
atexit.register(shutil.rmtree, os.environ["SAFEVIEW_CACHE_DIR"], True)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A benign RGB photo bundled with scikit-image, downscaled to keep tests fast."""
    from skimage import data, transform

    return (transform.resize(data.astronaut(), (96, 96), anti_aliasing=True) * 255).astype(np.uint8)


@pytest.fixture
def red_classifier():
    return RedDetector.build()


@pytest.fixture
def red_scene(photo):
    """The benign photo with a saturated red square planted at a known place (the ground truth)."""
    image = photo.copy()
    truth = np.zeros(image.shape[:2], bool)
    truth[10:34, 56:80] = True
    image[truth] = (255, 0, 0)
    return image, truth
