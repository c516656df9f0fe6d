"""Training protocol: split, resumability, bad data, initial weights, CLI, model-set files.

Every model here is the narrow ``small`` network trained for two epochs on 32 px images of a red
square (unsafe) versus none (safe), which takes a few seconds on one CPU thread."""

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from safeview.classify import load_checkpoint, load_model_set
from safeview.cli import app
from safeview.errors import ModelError, SafeViewError
from safeview.nets import build
from safeview.data import read_split, split_path
from safeview.metrics import TEMPERATURE_BOUNDS, expected_calibration_error
from safeview.train import TrainingInterrupted, fit_temperature, load_init_weights, state_path, train_classifier

SIZE = 32
FAST = dict(category="cyberbullying", arch="small", arch_kwargs={"width": 8}, image_size=SIZE, epochs=2, batch_size=4, lr=1e-2, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def square_images(folder, n, *, unsafe, seed):
    """``n`` noisy flat-colour images, with a red square placed at random when ``unsafe``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.clip(rng.integers(40, 200, 3) + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        if unsafe:
            y, x = rng.integers(0, SIZE - 12, 2)
            img[y : y + 12, x : x + 12] = (255, 0, 0)
        Image.fromarray(img).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """60 safe and 60 unsafe images, one unsafe file also copied into safe/, one corrupt file."""
    root = tmp_path_factory.mktemp("squares")
    square_images(root / "safe", 60, unsafe=False, seed=1)
    square_images(root / "unsafe", 60, unsafe=True, seed=2)
    shutil.copy(root / "unsafe" / "007.png", root / "safe" / "dup.png")
    (root / "safe" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "masks").mkdir()  # a folder that is no class is ignored
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(root / "masks" / "000.png")
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "squares.safeview"
    events = []
    clf = train_classifier(data, out=out, progress=events.append, **FAST)
    return out, clf, events


def test_two_epochs_reach_far_above_chance(trained):
    out, clf, events = trained
    meta = clf.metadata
    assert meta["val_accuracy"] >= 0.8  # chance is 0.5
    assert meta["test_metrics"]["roc_auc"] >= 0.8
    assert len(meta["history"]) == 2 and meta["epochs_run"] == 2
    assert sum(meta["n_images"].values()) == 121  # the corrupt file and masks/ are left out
    assert meta["n_images"]["val"] + meta["n_images"]["test"] in (24, 25)  # 6 + 6 groups each; the twin pair counts twice
    assert any("from scratch" in str(e) for e in events)
    assert any(e.kind == "step" and e.steps == -(-meta["n_images"]["train"] // 4) for e in events)
    assert not state_path(out).exists()  # a finished run leaves no resumable state behind
    loaded = load_checkpoint(out)
    assert loaded.labels == ["safe", "unsafe"] and loaded.unsafe_labels == ["unsafe"]
    assert loaded.temperature == pytest.approx(clf.temperature)
    assert loaded.metadata["split_file"] == split_path(out).name
    for name, tensor in clf.module.state_dict().items():
        assert torch.equal(tensor, loaded.module.state_dict()[name])


def test_corrupt_image_is_skipped_and_reported(trained, data):
    skipped = trained[1].metadata["skipped"]
    assert len(skipped) == 1 and str(data / "safe" / "broken.png") in skipped[0]


def test_split_file_is_stratified_and_leak_free(trained, data):
    out, _, _ = trained
    payload = json.loads(split_path(out).read_text())
    parts = read_split(split_path(out))
    items = payload["items"]
    assert len(items) == 121 and set(parts.values()) == {"train", "val", "test"}
    dup = [i for i in items if i["path"] in ("safe/dup.png", "unsafe/007.png")]
    assert len(dup) == 2 and dup[0]["sha256"] == dup[1]["sha256"] and dup[0]["part"] == dup[1]["part"]
    for part in ("val", "test"):
        groups: dict[str, set] = {}
        for item in items:
            if item["part"] == part:
                groups.setdefault(item["sha256"], set()).add(item["label"])
        strata = ["safe" if "safe" in labels else "unsafe" for labels in groups.values()]  # a tie goes to the first class
        assert strata.count("safe") == strata.count("unsafe") == 6  # 10 % of 61 and of 59 groups


def test_resume_after_ctrl_c_equals_uninterrupted_run(trained, data, tmp_path):
    out = tmp_path / "resumed.safeview"

    def interrupt_at_step_3_of_epoch_2(event):
        if event.kind == "step" and event.epoch == 2 and event.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # handled: stop at the step boundary and save

    with pytest.raises(TrainingInterrupted) as info:
        train_classifier(data, out=out, progress=interrupt_at_step_3_of_epoch_2, **FAST)
    assert info.value.state == state_path(out) and state_path(out).exists() and not out.exists()
    with pytest.raises(SafeViewError, match="other settings"):
        train_classifier(data, out=out, resume=True, **{**FAST, "lr": 2e-2})
    events = []
    resumed = train_classifier(data, out=out, resume=True, progress=events.append, **FAST)
    assert any("resuming" in str(e) and "step 3" in str(e) for e in events)
    assert not any(e.kind == "step" and e.epoch == 1 for e in events)
    reference = trained[1]
    for name, tensor in reference.module.state_dict().items():
        assert torch.equal(tensor, resumed.module.state_dict()[name]), name
    assert resumed.metadata["history"] == reference.metadata["history"]
    assert resumed.temperature == reference.temperature


def test_init_weights_load_backbone_and_reject_wrong_files(tmp_path):
    source = build("small", 5, width=8)  # same backbone, another number of classes
    torch.save(source.state_dict(), tmp_path / "backbone.pth")
    target = build("small", 2, width=8)
    loaded = load_init_weights(target, tmp_path / "backbone.pth")
    assert loaded == len(source.state_dict()) - 2  # all but the new head's weight and bias
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)

    torch.save(build("small", 2, width=16).state_dict(), tmp_path / "wider.pth")
    (tmp_path / "notes.pth").write_text("not weights")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pth")
    for name, message in [("wider.pth", "do not fit"), ("notes.pth", "not a readable"), ("no_tensors.pth", "state dict"), ("absent.pth", "no such")]:
        with pytest.raises(ModelError, match=message):
            load_init_weights(build("small", 2, width=8), tmp_path / name)


def test_wrong_init_stops_training_with_a_model_error(data, tmp_path):
    (tmp_path / "bad.pth").write_text("not weights")
    with pytest.raises(ModelError, match="bad.pth"):
        train_classifier(data, out=tmp_path / "m.safeview", init=tmp_path / "bad.pth", **FAST)
    assert not (tmp_path / "m.safeview").exists()


def test_cli_train_with_map_then_evaluate_and_scan_a_model_set(data, trained, tmp_path):
    out = tmp_path / "cli.safeview"
    result = CliRunner().invoke(app, [
        "train", str(data), "--category", "cyberbullying", "--out", str(out), "--map", "safe=safe", "--map", "unsafe=unsafe",
        "--width", "8", "--epochs", "1", "--image-size", str(SIZE), "--batch-size", "8", "--workers", "0",
    ])
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output and "saved" in result.output and split_path(out).exists()
    again = CliRunner().invoke(app, ["train", str(data), "--category", "x", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output

    report = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(trained[0]), str(data), "--part", "test", "--out", str(report), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert (report / "report.html").exists() and json.loads((report / "report.json").read_text())["n_images"] == 12

    (tmp_path / "set.toml").write_text(f'[models]\nself_harm = "{trained[0]}"\nsexual = "cli.safeview"\n')
    classifiers = load_model_set(f"{tmp_path / 'set.toml'}")
    assert [c.category for c in classifiers] == ["self_harm", "sexual"]
    assert classifiers[1].metadata["path"] == str(out)
    (tmp_path / "bad.toml").write_text("[models]\nsexual = 3\n")
    with pytest.raises(ModelError, match="models"):
        load_model_set(str(tmp_path / "bad.toml"))


def test_few_steps_do_not_leave_broken_batchnorm_statistics(tmp_path, monkeypatch):
    """The issue's toy case (80 noise images with a magenta or a blue square, one optimiser step
    per epoch, three epochs): with BatchNorm's running statistics left after 3 steps the model
    ranks perfectly and decides at chance, and must say so; recomputed over the training images,
    its decisions follow its ranking and nothing is flagged."""
    import safeview.train as train_module

    rng = np.random.default_rng(3)
    for label, colour in (("safe", (40, 60, 220)), ("unsafe", (230, 40, 200))):
        folder = tmp_path / "toy" / label
        folder.mkdir(parents=True)
        for i in range(40):
            img = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
            y, x = rng.integers(0, SIZE - 12, 2)
            img[y : y + 12, x : x + 12] = colour
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    kw = dict(FAST, epochs=3, batch_size=64)
    fixed = train_classifier(tmp_path / "toy", out=tmp_path / "fixed.safeview", **kw)
    monkeypatch.setattr(train_module, "BN_RECALIBRATE_STEPS", 0)  # what training did before
    events = []
    broken = train_classifier(tmp_path / "toy", out=tmp_path / "broken.safeview", progress=events.append, **kw)
    # before: chance decisions in eval mode with a perfect ranking, now said in plain words
    test = broken.metadata["test_metrics"]
    assert broken.metadata["val_accuracy"] <= 0.65 and test["accuracy"] == 0.5 and test["roc_auc"] == 1.0
    warnings = load_checkpoint(tmp_path / "broken.safeview").metadata["warnings"]
    assert any("ranking works and the decisions do not" in w for w in warnings)
    assert [str(e) for e in events if str(e).startswith("warning:")] == [f"warning: {w}" for w in warnings]
    result = CliRunner().invoke(app, [
        "train", str(tmp_path / "toy"), "--category", "cyberbullying", "--out", str(tmp_path / "cli.safeview"), "--width", "8",
        "--epochs", "3", "--image-size", str(SIZE), "--batch-size", "64", "--lr", "1e-2", "--workers", "0",
    ])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        *(f"warning: {w}" for w in warnings), f"warning: {len(warnings)} warnings above, also kept in the checkpoint's metadata"]  # here 2
    # after: the decisions follow what three steps learnt, and no warning says the model is unusable
    assert fixed.metadata["val_accuracy"] >= 0.75 and fixed.metadata["test_metrics"]["accuracy"] >= 0.75
    assert not any("do not use" in w for w in fixed.metadata["warnings"])


def test_temperature_fit_is_finite_and_within_its_bounds():
    """The validation logits of the broken toy model sent the old unbounded search to NaN (and the
    test metrics crashed on it); the fit is now the NLL's minimum, a bound when it lies beyond."""
    logits = torch.tensor([[0.239, -0.286], [0.256, -0.295], [0.321, -0.336], [0.319, -0.376],
                           [0.101, -0.056], [-0.021, 0.024], [0.030, -0.049], [0.029, -0.003]])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    t = fit_temperature(logits, labels)
    nll = lambda temp: float(torch.nn.functional.cross_entropy(logits / temp, labels))  # noqa: E731
    assert TEMPERATURE_BOUNDS[0] < t < TEMPERATURE_BOUNDS[1] and nll(t) <= min(nll(t * 1.01), nll(t / 1.01))
    separable = torch.tensor([[0.0, s] for s in (-0.3, -0.2, 0.2, 0.3)])
    assert fit_temperature(separable, torch.tensor([0, 0, 1, 1])) == TEMPERATURE_BOUNDS[0]  # no error to calibrate on
    wrong = torch.tensor([[0.0, 30.0], [30.0, 0.0]] * 2)
    assert fit_temperature(wrong, torch.tensor([0, 1] * 2)) == TEMPERATURE_BOUNDS[1]  # confidently wrong


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    """Logits four times too confident give T ≈ 4, and the ECE falls to under a third."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 3000)
    labels = (rng.random(3000) < 1 / (1 + np.exp(-z))).astype(np.int64)  # softmax([0, z]) is calibrated
    logits = torch.tensor(np.stack([np.zeros_like(z), 4 * z], 1), dtype=torch.float32)  # four times overconfident
    before = expected_calibration_error(torch.softmax(logits, 1).numpy(), labels)
    t = fit_temperature(logits, torch.from_numpy(labels))
    after = expected_calibration_error(torch.softmax(logits / t, 1).numpy(), labels)
    assert t == pytest.approx(4, rel=0.15)
    assert after < before / 3


@pytest.mark.parametrize("settings, message", [
    ({"arch": "vgg"}, "unknown architecture 'vgg'"),
    ({"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
    ({"epoch": 3}, "epoch: unknown setting; known settings: category"),
    ({"augment": "mixup"}, "augment: Input should be"),
])
def test_train_config_refuses_bad_settings_before_reading_any_image(tmp_path, settings, message):
    from safeview.train import TrainConfig

    with pytest.raises(SafeViewError, match=message):
        train_classifier(tmp_path / "no-such-data", out=tmp_path / "m.safeview", category="x", **settings)
    config = TrainConfig.build(category="x")
    with pytest.raises(SafeViewError, match="either a TrainConfig or settings"):
        train_classifier(tmp_path, out=tmp_path / "m.safeview", config=config, epochs=2)
