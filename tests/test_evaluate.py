"""Evaluating a classifier on labelled images: the report, its parts and its warnings (the metrics themselves are in test_metrics.py)."""

import json

import numpy as np
import pytest
from PIL import Image

from safeview.errors import SafeViewError
from safeview.evaluate import evaluate_classifier, write_evaluation
from safeview.data import LabelledImages, stratified_split, write_split


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
