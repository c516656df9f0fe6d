"""Evaluation metrics against hand-computed values, calibration, and the evaluation report."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from safeview.errors import SafeViewError
from safeview.evaluate import evaluate_classifier, write_evaluation
from safeview.metrics import classification_metrics, expected_calibration_error, roc_auc, roc_curve
from safeview.data import LabelledImages, stratified_split, write_split
from safeview.train import fit_temperature


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


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 3000)
    labels = (rng.random(3000) < 1 / (1 + np.exp(-z))).astype(np.int64)  # softmax([0, z]) is calibrated
    logits = torch.tensor(np.stack([np.zeros_like(z), 4 * z], 1), dtype=torch.float32)  # four times overconfident
    before = expected_calibration_error(torch.softmax(logits, 1).numpy(), labels)
    t = fit_temperature(logits, torch.from_numpy(labels))
    after = expected_calibration_error(torch.softmax(logits / t, 1).numpy(), labels)
    assert t == pytest.approx(4, rel=0.15)
    assert after < before / 3


@pytest.fixture
def red_folder(tmp_path, photo):
    """Photos with (unsafe) and without (safe) a red square, plus one corrupt file."""
    rng = np.random.default_rng(0)
    for label in ("safe", "unsafe"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            image = np.roll(photo, int(rng.integers(0, 96)), axis=1).copy()
            if label == "unsafe" and i < 4:  # two unsafe images without the square: errors
                y, x = rng.integers(0, 70, 2)
                image[y : y + 24, x : x + 24] = (255, 0, 0)
            Image.fromarray(image).save(tmp_path / "data" / label / f"{i}.png")
    (tmp_path / "data" / "safe" / "bad.png").write_bytes(b"not an image")
    return tmp_path / "data"


def test_evaluate_a_folder_and_write_the_report(red_classifier, red_folder, tmp_path):
    report = evaluate_classifier(red_classifier, red_folder)
    m = report["metrics"]
    assert report["n_images"] == 12 and len(report["skipped"]) == 1 and "bad.png" in report["skipped"][0]
    # recompute from the classifier's own probabilities
    files = sorted((red_folder / "safe").glob("[0-9].png")) + sorted((red_folder / "unsafe").glob("*.png"))
    p = red_classifier.predict_proba([np.asarray(Image.open(f).convert("RGB")) for f in files])
    y = np.array([0] * 6 + [1] * 6)
    pred = p.argmax(1)
    assert m["confusion_matrix"] == [[int(((y == t) & (pred == q)).sum()) for q in (0, 1)] for t in (0, 1)]
    assert m["confusion_matrix"] == [[6, 0], [2, 4]]
    assert [e["true"] for e in report["errors"]] == ["unsafe", "unsafe"]
    assert {e["path"].rsplit("/", 1)[-1] for e in report["errors"]} == {"4.png", "5.png"}

    page = write_evaluation(report, tmp_path / "report")
    html = page.read_text()
    for name in ("roc", "reliability", "confusion"):
        assert (tmp_path / "report" / "plots" / f"{name}.png").stat().st_size > 1000
        assert f"plots/{name}.png" in html
    thumbs = sorted((tmp_path / "report" / "errors").glob("*.jpg"))
    assert len(thumbs) == 2 and "blurred" in html
    # blurred: far smoother than the plain thumbnail of the same photo
    plain = write_evaluation(report, tmp_path / "plain", reveal=True)
    blurred_px = np.asarray(Image.open(thumbs[0]), np.float32)
    plain_px = np.asarray(Image.open(plain.parent / "errors" / thumbs[0].name), np.float32)
    assert np.abs(np.diff(blurred_px, axis=1)).mean() < 0.5 * np.abs(np.diff(plain_px, axis=1)).mean()
    assert json.loads((tmp_path / "report" / "report.json").read_text())["metrics"]["accuracy"] == pytest.approx(10 / 12)


def test_evaluate_one_part_of_a_split_and_foreign_labels(red_classifier, red_folder, tmp_path):
    from safeview.data import read_dataset
    from safeview.classify import file_sha256

    data = read_dataset(red_folder)
    good = [i for i, p in enumerate(data.paths) if p.name != "bad.png"]
    data = LabelledImages(data.root, [data.paths[i] for i in good], [data.labels[i] for i in good], data.classes)
    hashes = [file_sha256(p) for p in data.paths]
    split = stratified_split(data.labels, seed=0, groups=hashes)
    write_split(tmp_path / "m.split.json", data, hashes, split, seed=0)
    report = evaluate_classifier(red_classifier, red_folder, part="val", split=tmp_path / "m.split.json")
    assert report["n_images"] == len(split.val) == 2
    with pytest.raises(SafeViewError, match="not labels"):
        evaluate_classifier(red_classifier, red_folder, class_map={"safe": "safe", "unsafe": "porn"})
    with pytest.raises(SafeViewError, match="--split"):
        evaluate_classifier(red_classifier, red_folder, part="test")


def test_a_degenerate_model_is_named_as_such():
    y = np.array([0] * 10 + [1] * 10)
    # perfect ranking, but every decision is "unsafe": accuracy 0.5 = always the commonest class
    probs = np.column_stack([0.45 - 0.4 * (np.arange(20) >= 10) * 0.5, 0.55 + 0.4 * (np.arange(20) >= 10) * 0.5])
    m = classification_metrics(y, probs, labels=["safe", "unsafe"], unsafe_indices=[1])
    assert m["roc_auc"] == 1.0 and m["accuracy"] == 0.5
    assert any("one class only" in w for w in m["warnings"])
    assert any("ranking works and the decisions do not" in w for w in m["warnings"])
    good = classification_metrics(y, np.column_stack([1 - y * 0.9 - 0.05, y * 0.9 + 0.05]), labels=["safe", "unsafe"], unsafe_indices=[1])
    assert good["warnings"] == []
