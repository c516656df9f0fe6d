"""The control code of ConditionalVLM (paper, "Conditional Vision-Language Model"): the category
classifiers' calibrated unsafe probabilities for the image plus which of them are over the flag
threshold. It always comes from the classifiers' outputs, never from ground-truth labels (the
authors' released code used the labels; see ``shared/reference``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class ControlCode:
    """``probabilities``: category -> calibrated unsafe probability; ``threshold``: the flip
    threshold of the pipeline (a category is flagged when its unsafe probability is at least
    ``1 - threshold``, the paper's rule mirrored, as in :class:`safeview.pipeline.Safeguard`)."""

    probabilities: dict[str, float]
    threshold: float = 0.5

    @property
    def flagged(self) -> dict[str, float]:
        """The categories over threshold, most confident first."""
        over = {c: p for c, p in self.probabilities.items() if p >= 1 - self.threshold}
        return dict(sorted(over.items(), key=lambda kv: -kv[1]))

    def vector(self, categories: Sequence[str]) -> np.ndarray:
        """The code as the CIIT input: ``[p_1 … p_C, flag_1 … flag_C]`` (float32, length 2C) in
        the fixed ``categories`` order; a category the model set lacks counts as probability 0."""
        probs = np.array([float(self.probabilities.get(c, 0.0)) for c in categories], dtype=np.float32)
        return np.concatenate([probs, (probs >= 1 - self.threshold).astype(np.float32)])


def control_code(classifiers: Sequence, image: np.ndarray, *, threshold: float = 0.5) -> ControlCode:
    """Run every category classifier on ``image`` (H×W×3 uint8) and return the control code."""
    probabilities = {}
    for clf in classifiers:
        probs = clf.predict_proba(image[None])
        probabilities[clf.category] = float(clf.unsafe_probability(probs)[0])
    return ControlCode(probabilities, threshold)


def as_control(control: ControlCode | Mapping[str, float], *, threshold: float = 0.5) -> ControlCode:
    """Accept a :class:`ControlCode` or a plain ``{category: unsafe probability}`` mapping."""
    return control if isinstance(control, ControlCode) else ControlCode(dict(control), threshold)
