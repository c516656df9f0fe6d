"""Leakage: how much of the unsafe content stays visible in an output, measured against an exact
ground-truth mask (the synthetic benchmark's stand-ins, or a test's planted content).

The paper scores CSE by found %, depth and area, none of which says whether a person can still see
the content. These figures do, and every CSE or baseline table reports them:

- **recall**: the share of the content's pixels inside the obfuscated mask;
- **leak rate**: among outputs *reported safe*, the share whose recall is below
  :data:`LEAK_RECALL` (0.8) — an output called safe that still shows a fifth of the content;
- **area ratio**: obfuscated area over the content's area (1.0 is a perfect fit);
- **safe pixels identical**: the share of pixels outside the content left bit-identical.
"""

from __future__ import annotations

import statistics
from typing import Iterable

import numpy as np

#: an output reported safe with less than this share of the content obfuscated is a leak
LEAK_RECALL = 0.8


def leakage(mask: np.ndarray, truth: np.ndarray, image: np.ndarray | None = None, output: np.ndarray | None = None) -> dict:
    """One output's figures: ``mask`` obfuscated, ``truth`` the content (both H×W bool);
    ``safe_identical`` needs the ``image`` and its ``output`` (None otherwise)."""
    mask, truth = np.asarray(mask, bool), np.asarray(truth, bool)
    content = float(truth.sum())
    inter = float((mask & truth).sum())
    row = {
        "recall": inter / content if content else 1.0,
        "area_ratio": float(mask.sum()) / content if content else None,
        "iou": inter / max(1.0, float((mask | truth).sum())),
        "precision": inter / max(1.0, float(mask.sum())),
        "safe_identical": None,
    }
    if image is not None and output is not None:
        same = (np.asarray(output) == np.asarray(image)).all(axis=2)
        row["safe_identical"] = float(same[~truth].mean()) if (~truth).any() else 1.0
    return row


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.quantile(np.asarray(values, float), q))


def summarise_leakage(rows: Iterable[dict]) -> dict:
    """Leakage over outputs: ``rows`` hold :func:`leakage`'s keys and ``reported_safe`` (the output
    was called safe and would be shown). Medians and the 10th percentile of recall, the leak rate
    among outputs reported safe, the median area ratio and the mean and median share of identical
    safe pixels, each over the outputs reported safe."""
    safe = [r for r in rows if r.get("reported_safe")]
    recalls = [r["recall"] for r in safe]
    ratios = [r["area_ratio"] for r in safe if r.get("area_ratio") is not None]
    identical = [r["safe_identical"] for r in safe if r.get("safe_identical") is not None]
    return {
        "reported_safe": len(safe),
        "leaks": sum(r < LEAK_RECALL for r in recalls),
        "leak_rate": (sum(r < LEAK_RECALL for r in recalls) / len(recalls)) if recalls else None,
        "recall_median": _quantile(recalls, 0.5),
        "recall_p10": _quantile(recalls, 0.1),
        "area_ratio_median": _quantile(ratios, 0.5),
        "safe_identical_mean": float(statistics.fmean(identical)) if identical else None,
        "safe_identical_median": _quantile(identical, 0.5),
    }
