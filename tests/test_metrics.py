"""Metrics (scikit-learn's, and our ECE) against hand-computed values, and the plain-words
warnings about a model that cannot be trusted."""

import numpy as np
import pytest

from safeview.metrics import (
    TEMPERATURE_BOUNDS, classification_metrics, expected_calibration_error, reliability_bins, roc_auc, roc_curve, temperature_warnings,
)


def one_hot_probs(top: list[int], confidence: float, classes: int = 2) -> np.ndarray:
    p = np.full((len(top), classes), (1 - confidence) / (classes - 1))
    p[np.arange(len(top)), top] = confidence
    return p


def test_binary_metrics_match_a_hand_computed_confusion_matrix():
    #            TP TP TP FP FN FN TN TN TN TN
    y_true = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    m = classification_metrics(y_true, one_hot_probs(y_pred, 0.8), labels=["safe", "unsafe"], unsafe_indices=[1])
    assert m["confusion_matrix"] == [[4, 1], [2, 3]]
    assert m["unsafe_confusion"] == {"tp": 3, "fp": 1, "fn": 2, "tn": 4}
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5))
    assert [c["recall"] for c in m["per_class"]] == pytest.approx([4 / 5, 3 / 5])
    # every prediction is 80 % confident and 70 % right: one bin, ECE = |0.7 - 0.8|
    assert m["ece"] == pytest.approx(0.1)


def test_multiclass_metrics_pool_the_unsafe_labels():
    labels = ["hentai", "neutral", "porn"]
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [2, 0, 1, 0, 2, 1]  # hentai<->porn confusions still count as unsafe hits
    m = classification_metrics(y_true, one_hot_probs(y_pred, 0.9, 3), labels=labels, unsafe_indices=[0, 2])
    assert m["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 1, 1]]
    assert m["unsafe_confusion"] == {"tp": 3, "fp": 1, "fn": 1, "tn": 1}
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["unsafe_labels"] == ["hentai", "porn"]


def test_undefined_metrics_are_none_not_zero():
    m = classification_metrics([0, 0], one_hot_probs([0, 0], 0.9), labels=["safe", "unsafe"], unsafe_indices=[1])
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None and m["roc_auc"] is None
    with pytest.raises(ValueError):
        classification_metrics([0, 1], np.ones((3, 2)) / 2, labels=["safe", "unsafe"], unsafe_indices=[1])


def test_roc_auc_by_hand_and_consistent_with_the_curve():
    # positives 0.9, 0.4; negatives 0.6, 0.2: 3 of 4 pairs ordered right
    assert roc_auc(np.array([0.9, 0.4, 0.6, 0.2]), np.array([1, 1, 0, 0], bool)) == pytest.approx(3 / 4)
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0], bool)) == pytest.approx(0.5)  # a tie counts one half
    rng = np.random.default_rng(0)
    positives = rng.random(200) < 0.4
    scores = np.round(rng.random(200) + positives * 0.5, 1)  # many ties
    fpr, tpr = roc_curve(scores, positives)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert roc_auc(scores, positives) == pytest.approx(np.trapezoid(tpr, fpr))


def test_ece_by_hand():
    # four rows at 0.95 (3 right) and two at 0.55 (both right), 15 bins
    p = np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45]] * 2)
    y = np.array([0, 0, 0, 1, 0, 0])
    assert expected_calibration_error(p, y) == pytest.approx(4 / 6 * 0.2 + 2 / 6 * 0.45)


def test_a_degenerate_model_is_named_as_such():
    y = np.array([0] * 10 + [1] * 10)
    # perfect ranking, but every decision is "unsafe": accuracy 0.5 = always the commonest class
    probs = np.column_stack([0.45 - 0.4 * (np.arange(20) >= 10) * 0.5, 0.55 + 0.4 * (np.arange(20) >= 10) * 0.5])
    m = classification_metrics(y, probs, labels=["safe", "unsafe"], unsafe_indices=[1])
    assert m["roc_auc"] == 1.0 and m["accuracy"] == 0.5
    assert any("answers 'unsafe' for all 20 images" in w for w in m["warnings"])
    assert any("ranking works and the decisions do not" in w for w in m["warnings"])
    good = classification_metrics(y, np.column_stack([1 - y * 0.9 - 0.05, y * 0.9 + 0.05]), labels=["safe", "unsafe"], unsafe_indices=[1])
    assert good["warnings"] == []


def test_reliability_bins_by_hand():
    """Each bin holds the count, mean top probability and accuracy of its rows, empty bins None,
    a confidence on an edge falls in the bin it closes, as the reliability diagram draws them."""
    p = np.array([[0.95, 0.05], [0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])
    y = np.array([0, 1, 1, 1, 1])
    table = reliability_bins(p, y, bins=5)
    assert [b["count"] for b in table] == [0, 0, 2, 1, 2]  # 0.6 closes (0.4, 0.6], 0.8 closes (0.6, 0.8]
    assert table[0]["accuracy"] is None and table[0]["confidence"] is None
    assert [b["accuracy"] for b in table[2:]] == pytest.approx([0.5, 1.0, 0.5])
    assert [b["confidence"] for b in table[2:]] == pytest.approx([0.6, 0.8, 0.925])
    assert expected_calibration_error(p, y, bins=5) == pytest.approx(2 / 5 * 0.1 + 1 / 5 * 0.2 + 2 / 5 * 0.425)


def test_temperature_at_its_bound_is_named():
    """The issue's broken model stopped at T = 20 with nothing said; either bound now gives a plain
    warning in the metrics, an interior temperature none."""
    low, high = TEMPERATURE_BOUNDS
    y = np.array([0, 1] * 5)
    probs = np.column_stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1])
    flat = classification_metrics(y, probs, labels=["safe", "unsafe"], unsafe_indices=[1], temperature=high)
    assert any("upper bound" in w and "do not use" in w for w in flat["warnings"])
    assert any("lower bound" in w for w in temperature_warnings(low))
    assert temperature_warnings(1.3) == []
    assert classification_metrics(y, probs, labels=["safe", "unsafe"], unsafe_indices=[1], temperature=1.3)["warnings"] == []


def test_precision_recall_and_per_class_figures_are_scikit_learns():
    """On random three-class predictions with the unsafe labels pooled, every figure equals
    scikit-learn's own, and an absent class reads None, not 0."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)  # class 2 never occurs
    p = rng.dirichlet(np.ones(3), 60)
    m = classification_metrics(y, p, labels=["a", "b", "c"], unsafe_indices=[1, 2])
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y >= 1, pred >= 1))
    assert m["recall"] == pytest.approx(recall_score(y >= 1, pred >= 1))
    assert m["f1"] == pytest.approx(f1_score(y >= 1, pred >= 1))
    assert [c["recall"] for c in m["per_class"][:2]] == pytest.approx(list(recall_score(y, pred, labels=[0, 1], average=None)))
    assert m["per_class"][2]["recall"] is None and m["per_class"][2]["n"] == 0
