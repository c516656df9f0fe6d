"""A scene whose hand-written classifier decides on two known grid cells only: every baseline
must find exactly those (or, for boxes, cover them)."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import grid_segments, red_predict

KEY = (5, 6)


def _scene(scale: int):
    image = np.full((40, 40, 3), 90, np.uint8)
    image[::2, :, 1] = 110
    image[:, ::3, 2] = 140
    segments = grid_segments()
    key = np.isin(segments, KEY)
    image[key] = (255, 0, 0)
    image, key = np.kron(image, np.ones((scale, scale, 1), np.uint8)), np.kron(key, np.ones((scale, scale), bool))
    return image, np.kron(segments, np.ones((scale, scale), np.int32)), key, red_predict(key)


@pytest.fixture
def grid_scene():
    """(image, segments, key mask, predict): 4×4 cells of 10 px, cells 5 and 6 red."""
    return _scene(1)


@pytest.fixture
def large_grid_scene():
    """The same scene at 80 × 80 px (cells of 20 px), large enough for quickshift."""
    return _scene(2)
