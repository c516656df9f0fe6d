import hashlib
import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from safeview.cli import app
from safeview.schema import ErrorRecord, json_schema

runner = CliRunner()


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder with two stand-in images, a benign photo, a nested sub-folder and three bad files."""
    from safeview.synth import make_sample

    root = tmp_path_factory.mktemp("inputs")
    (root / "nested").mkdir()
    for i, category in enumerate(("cyberbullying", "self_harm")):
        Image.fromarray(make_sample(category, True, seed=100 + i, size=160).image).save(root / f"standin_{category}.png")
    Image.fromarray(make_sample("sexual", False, seed=7, size=160).image).save(root / "nested" / "benign.png")
    (root / "notes.jpg").write_text("this is not an image")
    data = (root / "standin_self_harm.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 3])
    (root / "empty.png").write_bytes(b"")
    return root


def test_version_and_help_do_not_import_torch():
    code = "import sys; from safeview.cli import app; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0 and result.stdout.startswith("safeview ")
    assert "scan" in runner.invoke(app, ["-h"]).stdout
    module = subprocess.run([sys.executable, "-m", "safeview", "--version"], capture_output=True, text=True)
    assert module.returncode == 0 and module.stdout.startswith("safeview ")


def test_scan_folder_mixed_good_and_bad(folder, tmp_path):
    before = {p.name: sha(p) for p in folder.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(folder), "--out", str(out), "--models", "demo"])
    assert result.exit_code == 2, result.output  # three bad inputs: errors take precedence over unsafe (1)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert any("notes.jpg: not a recognised image" in e for e in errors)
    assert any("truncated.png: damaged or truncated" in e for e in errors)
    assert any("empty.png: empty file" in e for e in errors)
    assert "3 scanned" in result.output and "3 failed" in result.output
    # originals untouched
    assert {p.name: sha(p) for p in folder.rglob("*") if p.is_file()} == before
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    rows = [r for r in records if "verdict" in r]
    failures = [ErrorRecord.model_validate(r) for r in records if "verdict" not in r]  # failures are records too
    assert len(rows) == 3 and len(failures) == 3 and {f.error_type for f in failures} == {"ImageError"}
    assert sorted(line.split("\t")[0] for line in result.stdout.splitlines()).count("error") == 3
    schema = json_schema()
    for row in rows:
        jsonschema.validate(row, schema)
        per_image = json.loads((out / (row["outputs"]["json"].split("/")[-1])).read_text())
        assert per_image == row
        assert {c["model"] for c in row["categories"]} == {"demo-sexual", "demo-cyberbullying", "demo-self_harm"}
        for c in row["categories"]:  # one vocabulary, the model's own labels beside it
            assert set(c["probabilities"]) == {"safe", "unsafe"} and c["probabilities"]["unsafe"] == c["unsafe_probability"]
            assert sum(c["labels"][label] for label in c["unsafe_labels"]) == pytest.approx(c["unsafe_probability"])
        if row["verdict"] == "unsafe":
            safe = np.asarray(Image.open(row["outputs"]["obfuscated"]))
            original = np.asarray(Image.open(row["input"]["path"]).convert("RGB"))
            from safeview.schema import RLE

            mask = RLE.model_validate(row["mask"]).to_mask()
            assert np.array_equal(safe[~mask], original[~mask])
        else:
            assert "obfuscated" not in row["outputs"]
        assert "view.original" not in row["outputs"]  # no unblurred copy of an original unless asked
    verdicts = {row["input"]["path"].split("/")[-1]: row["verdict"] for row in rows}
    assert verdicts["standin_cyberbullying.png"] == "unsafe" and verdicts["standin_self_harm.png"] == "unsafe"
    html = (out / "report.html").read_text()
    assert "notes.jpg" in html and "open the input file to reveal it" in html and "click to reveal" not in html
    # the report says what each model that scanned is worth, from its checkpoint's metadata
    assert html.count("held-out test accuracy 0.9") == 3 and "(236 views of 206 photos;" in html and "demo-self_harm" in html
    assert not list((out / "assets").glob("*original*"))
    # no overwrite without --force
    again = runner.invoke(app, ["scan", str(folder / "nested"), "--out", str(out), "--models", "demo"])
    assert again.exit_code == 2 and "--force" in again.output
    forced = runner.invoke(app, ["scan", str(folder / "nested"), "--out", str(out), "--models", "demo", "--force"])
    assert forced.exit_code in (0, 1), forced.output  # 1 only if the benign image is flagged
    verdict_lines = [line for line in forced.stdout.splitlines() if line.endswith("benign.png")]
    assert len(verdict_lines) == 1 and verdict_lines[0].split()[0] in ("safe", "unsafe")
    assert forced.exit_code == (1 if verdict_lines[0].startswith("unsafe") else 0)


def test_bad_invocations(tmp_path, folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["scan", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "holds no image files" in result.output
    result = runner.invoke(app, ["scan", str(folder / "nested"), "--out", str(tmp_path / "o2"), "--models", str(folder / "notes.jpg")])
    assert result.exit_code == 2 and "not a readable SafeView checkpoint" in result.output
    result = runner.invoke(app, ["scan", str(tmp_path / "nope*.png"), "--out", str(tmp_path / "o3")])
    assert result.exit_code != 0 and "no such file" in result.output


def test_models_command():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "open-nsfw" in result.output and "demo" in result.output
    from safeview.classify import load_classifier

    weakest = load_classifier("demo-cyberbullying").metadata["test_accuracy"]
    assert f"held-out test accuracy {weakest:.3f}" in result.output  # the weakest demo model says so


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    from safeview.synth import make_sample

    root = tmp_path_factory.mktemp("two")
    for i, category in enumerate(("self_harm", "sexual")):
        Image.fromarray(make_sample(category, i == 0, seed=300 + i, size=128).image).save(root / f"img{i}.png")
    return root


FAST = ["--models", "demo-self_harm", "--segmentation", "slic", "--max-regions", "3"]


def test_interrupted_run_is_consistent_and_resumes(two_images, tmp_path, monkeypatch):
    from safeview.pipeline import Safeguard

    out = tmp_path / "out"
    real = Safeguard.scan_iter

    def interrupted(self, sources, **kwargs):
        for i, result in enumerate(real(self, sources, **kwargs)):
            if i == 1:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(Safeguard, "scan_iter", interrupted)
    first = runner.invoke(app, ["scan", str(two_images), "--out", str(out), *FAST])
    assert first.exit_code == 130 and "--resume" in first.output
    assert len((out / "results.jsonl").read_text().splitlines()) == 1 and (out / "report.html").exists()
    monkeypatch.setattr(Safeguard, "scan_iter", real)
    blocked = runner.invoke(app, ["scan", str(two_images), "--out", str(out), *FAST])
    assert blocked.exit_code == 2 and "--resume" in blocked.output
    resumed = runner.invoke(app, ["scan", str(two_images), "--out", str(out), *FAST, "--resume"])
    assert resumed.exit_code == 1, resumed.output  # img0 is a self-harm stand-in
    assert [line.rsplit("/", 1)[1] for line in resumed.stdout.splitlines()] == ["img1.png"]  # only the one left
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["input"]["path"].rsplit("/", 1)[1] for r in records) == ["img0.png", "img1.png"]
    assert "img0.png" in (out / "report.html").read_text() and "img1.png" in (out / "report.html").read_text()


def test_force_removes_only_what_the_earlier_run_wrote(two_images, tmp_path):
    out = tmp_path / "out"
    first = runner.invoke(app, ["scan", str(two_images / "img0.png"), "--out", str(out), *FAST])
    assert first.exit_code == 1, first.output
    written = {p for p in out.rglob("*") if p.is_file()}
    assert any(p.name.endswith("png") for p in written)
    (out / "mine.txt").write_text("the user's own file")
    second = runner.invoke(app, ["scan", str(two_images / "img1.png"), "--out", str(out), *FAST, "--force"])
    assert second.exit_code in (0, 1), second.output
    left = {p for p in out.rglob("*") if p.is_file()}
    assert (out / "mine.txt") in left
    assert not [p for p in written - {out / "results.jsonl", out / "report.html"} if p in left and "img0" in p.name]
    assert "img0" not in (out / "results.jsonl").read_text()


def test_json_lines_and_quiet(two_images, tmp_path):
    result = runner.invoke(app, ["-q", "scan", str(two_images), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"), *FAST, "--json"])
    assert result.exit_code == 2  # the missing input is an error, and errors win over unsafe
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3 and sum("error" in line for line in lines) == 1
    assert "scanned" not in result.stderr  # --quiet: no summary line


def test_config_file_and_precedence(two_images, tmp_path):
    settings = tmp_path / "scan.toml"
    settings.write_text('models = "demo-self_harm"\nsegmentation = "slic"\nmax_regions = 3\nmode = "paper"\n\n[segmentation_params]\nn_segments = 30\n')
    result = runner.invoke(app, ["scan", str(two_images / "img0.png"), "--out", str(tmp_path / "a"), "--config", str(settings)])
    assert result.exit_code == 1, result.output
    row = json.loads((tmp_path / "a" / "results.jsonl").read_text().splitlines()[0])
    assert row["counterfactuals"][0]["mode"] == "paper" and row["counterfactuals"][0]["segmentation"] == "slic"
    given = runner.invoke(app, ["scan", str(two_images / "img0.png"), "--out", str(tmp_path / "b"), "--config", str(settings), "--mode", "hide"])
    row = json.loads((tmp_path / "b" / "results.jsonl").read_text().splitlines()[0])
    assert given.exit_code == 1 and row["counterfactuals"][0]["mode"] == "hide"  # the command line wins
    (tmp_path / "bad.toml").write_text('mode = "hide"\nsegmentaton = "slic"\n')
    bad = runner.invoke(app, ["scan", str(two_images), "--out", str(tmp_path / "c"), "--config", str(tmp_path / "bad.toml")])
    assert bad.exit_code == 2 and "segmentaton: unknown setting" in bad.output and not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv, message", [
    (["--segmentation", "slic", "--sam", "x"], "--sam is for --segmentation sam"),
    (["--rationale", "openai"], "needs base_url, model"),
    (["--margin", "0.7"], "margin must lie in"),
    (["--mode", "fast"], "'fast' is not one of"),
    (["--device", "tpu"], "unknown device"),
])
def test_bad_settings_fail_before_any_image(two_images, tmp_path, argv, message):
    result = runner.invoke(app, ["scan", str(two_images), "--out", str(tmp_path / "o"), "--models", "demo", *argv])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "o").exists()


def test_help_lists_choices_that_match_the_library():
    import typing

    from safeview import cli
    from safeview.attribute import METHODS as ATTRIBUTIONS
    from safeview.config import FALLBACKS, REPORT_ORIGINALS
    from safeview.counterfactual import MODES
    from safeview.obfuscate import STYLES
    from safeview.rationale import BACKENDS
    from safeview.segment import METHODS as SEGMENTATIONS
    from safeview.synth import RECIPES

    pairs = [(cli.Mode, MODES), (cli.Attribution, ATTRIBUTIONS), (cli.Segmentation, tuple(SEGMENTATIONS)), (cli.Style, STYLES),
             (cli.Fallback, FALLBACKS), (cli.Backend, BACKENDS), (cli.ReportOriginals, REPORT_ORIGINALS), (cli.SynthRecipe, tuple(RECIPES))]
    for choice, library in pairs:
        assert set(typing.get_args(choice)) == set(library)
    assert "hide|paper|minimal" in runner.invoke(app, ["scan", "--help"]).stdout


def test_scan_protect_file(two_images, tmp_path):
    protect = tmp_path / "protect.json"
    protect.write_text(json.dumps({"img0.png": [{"box": [0, 0, 40, 40], "label": "tattoo"}], "nothere.png": [{"box": [0, 0, 1, 1]}]}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(two_images / "img0.png"), "--out", str(out), *FAST, "--protect", str(protect)])
    assert result.exit_code == 1, result.output
    assert "no input matches nothere.png" in result.stderr
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["verdict"] == "unsafe"
    (kept,) = record["protected"]
    assert kept["label"] == "tattoo" and kept["box"] == [0, 0, 40, 40] and 0.0 <= kept["kept"] <= 1.0
    page = (out / "report.html").read_text()
    assert "protected region" in page and "tattoo" in page and "view.evidence" in record["outputs"]

    protect.write_text('{"img0.png": [{"box": [9, 9, 1, 1]}]}')
    bad = runner.invoke(app, ["scan", str(two_images / "img0.png"), "--out", str(tmp_path / "o2"), *FAST, "--protect", str(protect)])
    assert bad.exit_code == 2 and "img0.png[0]" in bad.stderr and "x1 > x0" in bad.stderr


def test_models_shows_each_checkpoints_accuracy_training_data_and_false_alarm_rate(tmp_path):
    """Built-in demo models and a given checkpoint are listed with their held-out test accuracy,
    what they were trained on and their false-alarm rate on real photos ("not measured" unless the
    metadata holds one), and a checkpoint's training warnings are shown with it."""
    from safeview.classify import Classifier, Preprocess
    from safeview.nets import build

    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "trained on 8000 images from build/demo-data-sexual/sexual" in result.stdout
    assert result.stdout.count("(236 views of 206 photos;") == 3  # the three demo models, measured when built
    assert result.stdout.count("(safeview.synth, recipe train, seed 0, 256 px)") == 1
    assert "(safeview.synth, recipe train_faces, seed 1, 256 px)" in result.stdout  # cyberbullying's last schedule
    assert "(safeview.synth, recipe train_petals, seed 2, 256 px)" in result.stdout  # self-harm's last schedule
    meta = {"test_accuracy": 0.9, "n_images": {"train": 40, "val": 5, "test": 5}, "trained_on": "photos/",
            "real_false_alarm_rate": 0.25, "warnings": ["test split: the calibration temperature is at its upper bound"]}
    clf = Classifier.from_module(build("small", 2, width=8), ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(32, 32)), metadata=meta)
    clf.save(tmp_path / "mine.safeview", arch="small", arch_kwargs={"width": 8})
    result = runner.invoke(app, ["models", str(tmp_path / "mine.safeview")])
    assert result.exit_code == 0, result.output
    mine = result.stdout.split(f"{tmp_path / 'mine.safeview'}:")[1]
    assert "held-out test accuracy 0.900 on 5 images; trained on 40 images from photos/; false-alarm rate on real photos 25.0 %" in mine
    assert "warning: test split: the calibration temperature is at its upper bound" in mine
    missing = runner.invoke(app, ["models", str(tmp_path / "absent.safeview")])
    assert missing.exit_code == 2 and "no such model file" in missing.stderr


def test_evaluate_real_photos_measures_and_records_the_false_alarm_rate(tmp_path):
    from safeview.classify import Classifier, Preprocess, load_checkpoint
    from safeview.nets import build

    clf = Classifier.from_module(build("small", 2, width=8), ["safe", "unsafe"], ["unsafe"], name="mine", preprocess=Preprocess(resize=(32, 32)))
    path = clf.save(tmp_path / "mine.safeview", arch="small", arch_kwargs={"width": 8})
    shown = runner.invoke(app, ["evaluate", str(path), "--real-photos", "--json"])
    assert shown.exit_code == 0, shown.output
    found = json.loads(shown.stdout.strip().splitlines()[-1])
    assert found["real_false_alarm_images"] == 236 and "views of 206 real photos called unsafe" in shown.stderr
    assert "real_false_alarm_rate" not in load_checkpoint(path).metadata  # measured, not recorded
    recorded = runner.invoke(app, ["evaluate", str(path), "--real-photos", "--record"])
    assert recorded.exit_code == 0 and "recorded in the checkpoint" in recorded.stderr
    assert load_checkpoint(path).metadata["real_false_alarm_rate"] == found["real_false_alarm_rate"]
    listed = runner.invoke(app, ["models", str(path)])
    assert f"false-alarm rate on real photos {100 * found['real_false_alarm_rate']:.1f} % (236 views of 206 photos; " in listed.stdout
    assert runner.invoke(app, ["evaluate", "open-nsfw", "--real-photos", "--record"]).exit_code == 2  # not a checkpoint file
    assert runner.invoke(app, ["evaluate", str(path)]).exit_code == 2  # neither data nor --real-photos


def test_scan_in_worker_processes_records_what_one_process_does(folder, tmp_path):
    """Two worker processes (each loading the models) give the same records, in the same order, as
    a scan in this process: verdicts, masks, probabilities and the failing file's error record."""

    def scan(workers: int) -> tuple[list[str], list[dict]]:
        out = tmp_path / f"w{workers}"
        result = runner.invoke(app, ["scan", str(folder), "--out", str(out), "--models", "demo", "--batch-size", "1",
                                     "--workers", str(workers)])
        assert result.exit_code == 2, result.output  # the bad files
        timed = ("timings", "seconds", "outputs")  # how long each step took, and where files went, differ

        def untimed(value):
            if isinstance(value, dict):
                return {k: untimed(v) for k, v in value.items() if k not in timed}
            return [untimed(v) for v in value] if isinstance(value, list) else value

        return result.stdout.splitlines(), [untimed(json.loads(line)) for line in (out / "results.jsonl").read_text().splitlines()]

    lines, records = scan(1)
    assert scan(2) == (lines, records)
    assert any(r.get("error_type") == "ImageError" and "truncated.png" in r["error"] for r in records)
    assert any(r.get("verdict") == "unsafe" for r in records)


def test_hostile_file_names_stay_one_line_each_and_do_not_stop_the_run(two_images, tmp_path):
    """A path holding ``[/y]`` used to stop the scan with Rich's MarkupError traceback (exit 1, no
    report), ``[bold]b.png`` was printed as ``b.png``, and a newline or terminal escape in a name
    went out raw, splitting the image's stdout line in two."""
    root = tmp_path / "in"
    (root / "x[").mkdir(parents=True)
    for name in ("x[/y].png", "[bold]b.png", "esc\x1b[7m.png"):
        (root / name).write_text("not an image")
    (root / "new\nline.png").write_bytes((two_images / "img1.png").read_bytes())
    result = runner.invoke(app, ["scan", str(root), "--out", str(tmp_path / "out"), *FAST])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(line.split("\t")[0] in ("safe", "error") for line in lines)
    assert f"safe\t{root}/new\\nline.png" in lines and f"error\t{root}/esc\\x1b[7m.png" in lines
    for name in ("x[/y].png", "[bold]b.png", "esc\\x1b[7m.png"):
        assert f"error: {root}/{name}: not a recognised image" in result.output
    assert "\x1b" not in result.output and (tmp_path / "out" / "report.html").exists()


def test_out_equal_to_or_inside_the_scanned_folder(two_images, tmp_path):
    """A rerun into an --out inside the scanned folder used to scan the earlier run's outputs as
    new images (--resume: its report thumbnails and .safe.png files; --force: errors for each);
    an --out that is the scanned folder itself is refused before anything is written."""
    root = tmp_path / "in"
    root.mkdir()
    for name in ("img0.png", "img1.png"):
        (root / name).write_bytes((two_images / name).read_bytes())
    before = {p.name: sha(p) for p in root.iterdir()}
    first = runner.invoke(app, ["scan", str(root), "--out", str(root / "res"), *FAST])
    assert first.exit_code == 1, first.output
    assert list((root / "res").glob("*.safe.png")) or list((root / "res").glob("*.not-verified.png"))
    for flag in ("--resume", "--force"):
        again = runner.invoke(app, ["scan", str(root), "--out", str(root / "res"), *FAST, flag])
        assert again.exit_code == 1, again.output
        assert "/res/" not in again.stdout and len(again.stdout.splitlines()) == (0 if flag == "--resume" else 2)
    same = runner.invoke(app, ["scan", str(root), "--out", str(root), *FAST])
    assert same.exit_code == 2 and "is the output folder" in same.output
    assert {p.name: sha(p) for p in root.iterdir() if p.is_file()} == before


def test_scan_image_limits_are_options_and_their_errors_name_them(tmp_path):
    """An image over the aspect or decoded-size limit is refused with a line that names the option
    which lifts the limit, and scan has that option (serve shares it)."""
    from safeview.synth import make_background

    wide = tmp_path / "inputs" / "wide.png"
    wide.parent.mkdir()
    Image.fromarray(np.tile(make_background(seed=3, size=400), (1, 3, 1))[:, :1100]).save(wide)  # 1100×400 RGB, 1.26 MiB
    for option, value, says in (("--max-decoded-mb", "1", "raise --max-decoded-mb"), ("--max-aspect", "2", "raise --max-aspect")):
        out = tmp_path / f"out{option}"
        result = runner.invoke(app, ["scan", str(wide), "--out", str(out), "--models", "demo", "--attributes", "none", option, value])
        assert result.exit_code == 2, result.output
        assert "wide.png" in result.output and says in result.output, result.output
    result = runner.invoke(app, ["scan", str(wide), "--out", str(tmp_path / "ok"), "--models", "demo", "--attributes", "none",
                                 "--max-decoded-mb", "2", "--max-aspect", "3"])
    assert result.exit_code in (0, 1) and "error:" not in result.output, result.output


def test_tiles_option_classifies_every_image_in_its_tiles_too(tmp_path):
    """``--tiles`` reaches the scan: each result records the tiles its image was classified in (9 for
    a square one), and a scan without it records none."""
    from safeview.synth import make_background

    path = tmp_path / "square.png"
    Image.fromarray(make_background(seed=5, size=288)).save(path)
    for flags, tiles in (([], 0), (["--tiles"], 9)):
        result = runner.invoke(app, ["scan", str(path), "--out", str(tmp_path / f"o{tiles}"), *FAST, "--attributes", "none", "--json", *flags])
        assert result.exit_code in (0, 1), result.output
        assert json.loads(result.stdout.splitlines()[0])["input"]["tiles"] == tiles
