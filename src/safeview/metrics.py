"""Classification metrics shared by training and evaluation, from scikit-learn: accuracy,
unsafe-class precision, recall and F1, per-class precision and recall, ROC-AUC and the ROC curve,
the confusion matrix and the reliability curve (``calibration_curve``). Ours: the expected
calibration error (Guo et al. 2017, 15 equal-width bins), which scikit-learn lacks and which says
whether the search's 0.5 threshold means what it says, and plain-words warnings about a model that
cannot be trusted whatever its headline figures.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

ECE_BINS = 15

#: the range temperature scaling searches (``train.fit_temperature``); a fit at either end did not
#: calibrate the model (see :func:`temperature_warnings`)
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _defined(value: float) -> float | None:
    """scikit-learn's ``zero_division=nan`` as None: undefined, not zero."""
    return None if np.isnan(value) else float(value)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin ``(lo, hi]``: count, mean confidence (the top probability) and
    accuracy (top class == label) of the rows that fall in it; the reliability diagram's data, from
    scikit-learn's ``calibration_curve`` of the top class being right (None in an empty bin)."""
    from sklearn.calibration import calibration_curve

    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    confidence = np.clip(probabilities.max(axis=1), 0.0, 1.0)
    correct = (probabilities.argmax(axis=1) == labels).astype(int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=bins)  # calibration_curve's binning
    accuracy, mean_confidence = (
        calibration_curve(correct, confidence, n_bins=bins, strategy="uniform") if len(confidence) else (np.zeros(0), np.zeros(0))
    )
    filled = iter(zip(accuracy.tolist(), mean_confidence.tolist()))
    out = []
    for b in range(bins):
        acc, conf = next(filled) if counts[b] else (None, None)
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(counts[b]), "confidence": conf, "accuracy": acc})
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
    y_true: Sequence[int], probabilities: np.ndarray, *, labels: Sequence[str], unsafe_indices: Sequence[int], bins: int = ECE_BINS,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Metrics of ``probabilities`` (N×C) against class indices ``y_true``.

    ``accuracy``: top class == label. ``precision``/``recall``/``f1``: unsafe (any of
    ``unsafe_indices``) as the positive class, predicted when the top class is unsafe; None when
    undefined (no predicted or no actual positives). ``roc_auc``: of the summed unsafe probability.
    ``ece``: :func:`expected_calibration_error`. ``confusion_matrix``: C×C counts, rows true, columns
    predicted. Also ``per_class`` counts, the ``reliability`` bins, the ``roc`` curve and
    ``warnings`` (:func:`degenerate`, and :func:`temperature_warnings` of the model's calibration
    ``temperature`` when given).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or len(p) != len(y) or p.shape[1] != len(labels):
        raise ValueError(f"probabilities of shape {p.shape} do not match {len(y)} labels over {len(labels)} classes")
    pred = p.argmax(axis=1)
    unsafe = np.isin(np.arange(len(labels)), list(unsafe_indices))
    actual, flagged = unsafe[y], unsafe[pred]
    classes = list(range(len(labels)))
    if len(y):
        confusion = confusion_matrix(y, pred, labels=classes)
        (tn, fp), (fn, tp) = confusion_matrix(actual, flagged, labels=[False, True]).tolist()
        precision, recall, f1, _ = precision_recall_fscore_support(actual, flagged, average="binary", zero_division=np.nan)
        class_precision, class_recall, _, support = precision_recall_fscore_support(y, pred, labels=classes, average=None, zero_division=np.nan)
    else:
        confusion = np.zeros((len(labels),) * 2, np.int64)
        tn = fp = fn = tp = 0
        precision = recall = f1 = np.nan
        class_precision = class_recall = np.full(len(labels), np.nan)
        support = np.zeros(len(labels), np.int64)
    score = p[:, unsafe].sum(axis=1)
    fpr, tpr = roc_curve(score, actual)
    return {
        "n": int(len(y)),
        "labels": list(labels),
        "unsafe_labels": [labels[i] for i in unsafe_indices],
        "accuracy": float(accuracy_score(y, pred)) if len(y) else None,
        "precision": _defined(precision),
        "recall": _defined(recall),
        "f1": _defined(f1),
        "roc_auc": roc_auc(score, actual),
        "ece": expected_calibration_error(p, y, bins=bins) if len(y) else None,
        "unsafe_confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "confusion_matrix": confusion.tolist(),
        "per_class": [
            {"label": label, "n": int(support[i]), "correct": int(confusion[i, i]),
             "recall": _defined(class_recall[i]), "precision": _defined(class_precision[i])}
            for i, label in enumerate(labels)
        ],
        "reliability": reliability_bins(p, y, bins=bins),
        "warnings": degenerate(y, pred, score, actual, labels) + (temperature_warnings(temperature) if temperature is not None else []),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }


def degenerate(y: np.ndarray, pred: np.ndarray, score: np.ndarray, actual: np.ndarray, labels: Sequence[str]) -> list[str]:
    """Plain-words warnings for a model that cannot be trusted whatever its headline figures: it
    predicts a single class, or it ranks the unsafe images well (ROC-AUC ≥ 0.9) while its decisions
    are no better than always answering the commonest class (broken BatchNorm statistics or a
    threshold in the wrong place)."""
    warnings: list[str] = []
    if len(y) < 2:
        return warnings
    used = np.unique(pred)
    if len(used) == 1 and len(np.unique(y)) > 1:
        warnings.append(f"the model answers {labels[int(used[0])]!r} for all {len(y)} images: it is degenerate; do not use its verdicts")
    majority = float(np.bincount(y, minlength=len(labels)).max() / len(y))
    accuracy = float((pred == y).mean())
    auc = roc_auc(score, actual)
    if auc is not None and auc >= 0.9 and accuracy <= majority + 0.02:
        warnings.append(
            f"ROC-AUC is {auc:.2f} but accuracy {accuracy:.2f} is no better than always answering the commonest class "
            f"({majority:.2f}): the ranking works and the decisions do not (BatchNorm statistics or calibration); "
            "do not use this model's verdicts"
        )
    return warnings


def temperature_warnings(temperature: float) -> list[str]:
    """A warning when the calibration temperature sits at an end of :data:`TEMPERATURE_BOUNDS`: at
    the top, softmax(logits / T) was flattened as far as allowed because the logits' confidence was
    wrong (the issue's broken-BatchNorm model stopped at 20); at the bottom, the validation split
    had no errors to calibrate on, so the probabilities are as extreme as allowed, not calibrated."""
    low, high = TEMPERATURE_BOUNDS
    if temperature >= high * (1 - 1e-6):
        return [f"the calibration temperature is at its upper bound ({high:g}): the model's confidence is wrong, its "
                "probabilities are flattened towards chance and the 0.5 threshold means nothing; do not use its verdicts"]
    if temperature <= low * (1 + 1e-6):
        return [f"the calibration temperature is at its lower bound ({low:g}): the validation split gave nothing to "
                "calibrate on (too few images or no errors), so the probabilities are not calibrated"]
    return []
