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
from safeview.schema import json_schema

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
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    schema = json_schema()
    for row in rows:
        jsonschema.validate(row, schema)
        per_image = json.loads((out / (row["outputs"]["json"].split("/")[-1])).read_text())
        assert per_image == row
        if row["verdict"] == "unsafe":
            safe = np.asarray(Image.open(row["outputs"]["obfuscated"]))
            original = np.asarray(Image.open(row["input"]["path"]).convert("RGB"))
            from safeview.schema import RLE

            mask = RLE.model_validate(row["mask"]).to_mask()
            assert np.array_equal(safe[~mask], original[~mask])
        else:
            assert "obfuscated" not in row["outputs"]
    verdicts = {row["input"]["path"].split("/")[-1]: row["verdict"] for row in rows}
    assert verdicts["standin_cyberbullying.png"] == "unsafe" and verdicts["standin_self_harm.png"] == "unsafe"
    html = (out / "report.html").read_text()
    assert "notes.jpg" in html and "click to reveal" in html
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
    assert "held-out test accuracy 0.720" in result.output  # the weak cyberbullying demo model says so
