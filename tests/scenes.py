"""Hand-written scenes shared by the search and baseline tests: a grid of regions and a
classifier whose decision depends only on known pixels, so the right answer is known exactly."""

from __future__ import annotations

import numpy as np


def grid_segments(h: int = 40, w: int = 40, cell: int = 10) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return ((ys // cell) * (w // cell) + xs // cell).astype(np.int32)


def red_predict(key: np.ndarray):
    """Class 1 (unsafe) with probability ≈ the fraction of ``key`` pixels still saturated red, so
    the decision flips (class 0 > 0.5) only when more than half of ``key`` is obfuscated."""

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        red = (batch[:, key, 0] > 200) & (batch[:, key, 1] < 60)
        p = red.mean(axis=1) * 0.98 + 0.01
        return np.stack([1 - p, p], axis=1)

    return predict
