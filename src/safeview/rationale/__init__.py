"""Rationales: why an image was flagged, in words tied to its unsafe attributes (the paper's
ConditionalVLM). Backends share one interface, ``rationale(image, control, evidence) -> Rationale``;
the embedded default, ``evidence``, needs no weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..schema import Rationale
from .evidence import ATTRIBUTES, evidence_rationale

BACKENDS = ("evidence",)


def rationale(
    image: np.ndarray, control: dict[str, float], evidence: dict[str, Any], *, backend: str = "evidence", threshold: float = 0.5
) -> Rationale:
    """Explain the verdict on ``image`` given the control code (category -> unsafe probability)
    and the counterfactual evidence, with the chosen backend."""
    if backend != "evidence":
        raise ValueError(f"unknown rationale backend {backend!r}; available: {', '.join(BACKENDS)}")
    return evidence_rationale(image.shape[:2], control, evidence, threshold=threshold)


__all__ = ["ATTRIBUTES", "BACKENDS", "rationale"]
