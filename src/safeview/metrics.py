"""Classification metrics shared by training and evaluation: accuracy, unsafe-class precision,
recall and F1, ROC-AUC and the ROC curve, the confusion matrix (scikit-learn's, where it has them),
and the expected calibration error with its reliability bins (Guo et al. 2017, 15 equal-width
bins), which scikit-learn lacks and which says whether the search's 0.5 threshold means what it
says.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

ECE_BINS = 15


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin ``(lo, hi]``: count, mean confidence (the top probability) and
    accuracy (top class == label) of the rows that fall in it; the reliability diagram's data."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out.append({
            "lo": b / bins, "hi": (b + 1) / bins, "count": n,
            "confidence": float(confidence[sel].mean()) if n else None,
            "accuracy": float(correct[sel].mean()) if n else None,
        })
    return out


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """ECE = sum over bins of (bin count / N) * |accuracy - mean confidence| (Guo et al. 2017)."""
    table = reliability_bins(probabilities, labels, bins=bins)
    n = sum(b["count"] for b in table)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in table if b["count"])) if n else 0.0


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve (scikit-learn's ``roc_auc_score``: ties count one half); None when
    one class is absent, where it is undefined."""
    from sklearn.metrics import roc_auc_score

    positives = np.asarray(positives, bool)
    if positives.all() or not positives.any():
        return None
    return float(roc_auc_score(positives, np.asarray(scores, np.float64)))


def roc_curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score threshold, from (0, 0) to (1, 1)
    (scikit-learn's ``roc_curve`` with every point kept); with one class absent the curve is
    undefined and only the point (0, 0) is returned."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    positives = np.asarray(positives, bool)
    if positives.all() or not positives.any():
        return np.zeros(1), np.zeros(1)
    fpr, tpr, _ = sk_roc_curve(positives, np.asarray(scores, np.float64), drop_intermediate=False)
    return fpr, tpr


def classification_metrics(
    y_true: Sequence[int], probabilities: np.ndarray, *, labels: Sequence[str], unsafe_indices: Sequence[int], bins: int = ECE_BINS
) -> dict[str, Any]:
    """Metrics of ``probabilities`` (N×C) against class indices ``y_true``.

    ``accuracy``: top class == label. ``precision``/``recall``/``f1``: unsafe (any of
    ``unsafe_indices``) as the positive class, predicted when the top class is unsafe; None when
    undefined (no predicted or no actual positives). ``roc_auc``: of the summed unsafe probability.
    ``ece``: :func:`expected_calibration_error`. ``confusion_matrix``: C×C counts, rows true, columns
    predicted. Also ``per_class`` counts, the ``reliability`` bins, the ``roc`` curve and
    ``warnings`` (:func:`degenerate`).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or len(p) != len(y) or p.shape[1] != len(labels):
        raise ValueError(f"probabilities of shape {p.shape} do not match {len(y)} labels over {len(labels)} classes")
    pred = p.argmax(axis=1)
    unsafe = np.isin(np.arange(len(labels)), list(unsafe_indices))
    actual, flagged = unsafe[y], unsafe[pred]
    tp, fp = int((actual & flagged).sum()), int((~actual & flagged).sum())
    fn, tn = int((actual & ~flagged).sum()), int((~actual & ~flagged).sum())
    from sklearn.metrics import confusion_matrix

    confusion = confusion_matrix(y, pred, labels=list(range(len(labels)))) if len(y) else np.zeros((len(labels),) * 2, np.int64)
    score = p[:, unsafe].sum(axis=1)
    fpr, tpr = roc_curve(score, actual)
    return {
        "n": int(len(y)),
        "labels": list(labels),
        "unsafe_labels": [labels[i] for i in unsafe_indices],
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "roc_auc": roc_auc(score, actual),
        "ece": expected_calibration_error(p, y, bins=bins) if len(y) else None,
        "unsafe_confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "confusion_matrix": confusion.tolist(),
        "per_class": [
            {
                "label": label, "n": int(confusion[i].sum()), "correct": int(confusion[i, i]),
                "recall": float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None,
                "precision": float(confusion[i, i] / confusion[:, i].sum()) if confusion[:, i].sum() else None,
            }
            for i, label in enumerate(labels)
        ],
        "reliability": reliability_bins(p, y, bins=bins),
        "warnings": degenerate(y, pred, score, actual, len(labels)),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }


def degenerate(y: np.ndarray, pred: np.ndarray, score: np.ndarray, actual: np.ndarray, n_classes: int) -> list[str]:
    """Plain-words warnings for a model that cannot be trusted whatever its headline figures: it
    predicts a single class, or it ranks the unsafe images well (ROC-AUC ≥ 0.9) while its decisions
    are no better than always answering the commonest class (broken BatchNorm statistics or a
    threshold in the wrong place)."""
    warnings: list[str] = []
    if len(y) < 2:
        return warnings
    used = np.unique(pred)
    if len(used) == 1 and len(np.unique(y)) > 1:
        warnings.append(f"the model predicts one class only (class {int(used[0])}) for all {len(y)} images: it is degenerate")
    majority = float(np.bincount(y, minlength=n_classes).max() / len(y))
    accuracy = float((pred == y).mean())
    auc = roc_auc(score, actual)
    if auc is not None and auc >= 0.9 and accuracy <= majority + 0.02:
        warnings.append(
            f"ROC-AUC is {auc:.2f} but accuracy {accuracy:.2f} is no better than always answering the commonest class "
            f"({majority:.2f}): the ranking works and the decisions do not (BatchNorm statistics or calibration); "
            "do not use this model's verdicts"
        )
    return warnings
