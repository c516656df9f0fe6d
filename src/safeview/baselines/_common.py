"""What every baseline shares: a predict wrapper that counts queries (images classified), batched
classification of masked images with the caller's obfuscator, the flip rule, and the quickshift
segmentation that SEDC and LIME use by default."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..counterfactual import FlipRule, Predict, default_flip_rule
from ..obfuscate import Obfuscate, Obfuscator
from ..segment import connected_labels


class CountingPredict:
    """``predict`` that counts every image it classifies in ``queries`` and returns float64."""

    def __init__(self, predict: Predict) -> None:
        self.predict = predict
        self.queries = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        self.queries += len(batch)
        return np.asarray(self.predict(batch), dtype=np.float64)


def resolve(
    source_class: int, threshold: float, flip_rule: FlipRule | None, obfuscator: Obfuscate | None
) -> tuple[FlipRule, Obfuscate]:
    """The flip rule (default: another class above ``threshold``) and obfuscator (default: blur)."""
    return flip_rule or default_flip_rule(source_class, threshold), obfuscator or Obfuscator()


def classify_masks(
    predict: CountingPredict, image: np.ndarray, masks: Sequence[np.ndarray], obfuscator: Obfuscate, *, batch_size: int
) -> np.ndarray:
    """Probabilities ``(len(masks), C)`` of ``image`` with each mask obfuscated, ``batch_size`` images
    per forward. The obfuscated images are not kept: the obfuscator is deterministic, so the chosen
    one is rebuilt bit-identically when it is returned."""
    rows = []
    for start in range(0, len(masks), max(1, int(batch_size))):
        rows.append(predict(np.stack([obfuscator(image, m) for m in masks[start : start + batch_size]])))
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def quickshift_segments(
    image: np.ndarray, *, kernel_size: float = 4, max_dist: float = 200, ratio: float = 0.2, seed: int = 0
) -> np.ndarray:
    """scikit-image quickshift with LIME's (and SEDC's) defaults, split into 4-connected regions
    labelled ``0..K-1`` like every SafeView segmentation."""
    from skimage.segmentation import quickshift

    labels = quickshift(np.asarray(image), kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, rng=seed)
    return connected_labels(labels)
