"""`safeview vlm make-data | train | eval` end to end on a tiny local InstructBLIP checkpoint."""

import csv
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("transformers")

from safeview.cli import app  # noqa: E402
from safeview.rationale.prompts import load_templates  # noqa: E402
from safeview.rationale.tiny import SYNTHETIC_ANSWERS, save_tiny  # noqa: E402
from safeview.synth import make_sample  # noqa: E402


def test_make_data_train_eval(tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for category in ("sexual", "self_harm"):
        (tmp_path / "imgs" / category).mkdir(parents=True)
        Image.fromarray(make_sample(category, True, seed=7, size=96).image).save(tmp_path / "imgs" / category / "x.png")
    runner = CliRunner()
    data = tmp_path / "data.jsonl"
    result = runner.invoke(app, ["vlm", "make-data", str(tmp_path / "imgs"), "--out", str(data)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(records) == 2 * 2 + 2 + 3 and all(not r["answer"] for r in records)

    result = runner.invoke(app, ["vlm", "train", str(data), "--base", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no record has an answer" in result.output

    for r in records:  # a person writes the answers and the classifiers' control codes
        r["answer"] = SYNTHETIC_ANSWERS[r["category"]]
        r["control"] = {"sexual": 0.9 if r["category"] == "sexual" else 0.1, "self_harm": 0.9 if r["category"] == "self_harm" else 0.1}
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    base = save_tiny(tmp_path / "base", [*load_templates().generic, *SYNTHETIC_ANSWERS.values()])
    out = tmp_path / "ciit"
    result = runner.invoke(app, ["vlm", "train", str(data), "--base", str(base), "--out", str(out), "--epochs", "1", "--batch-size", "4", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    assert "3 steps" in result.output and (out / "ciit.json").exists() and (out / "checkpoint-3").is_dir()

    sheet = tmp_path / "sheet"
    result = runner.invoke(app, ["vlm", "eval", str(data), "--out", str(sheet), "--backend", "instructblip,evidence", "--vlm", str(out), "--guidance", "1,0"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(sheet / "ratings.csv")))
    assert len(rows) == 2 * 11 * 3  # images x questions x (w=1, w=0, evidence)
    assert {(r["backend"], r["guidance"]) for r in rows} == {("instructblip", "1.0"), ("instructblip", "0.0"), ("evidence", "")}
    assert "instructblip\tw=1.0\tcoarse" in result.output and (sheet / "ratings.html").exists()

    result = runner.invoke(app, ["vlm", "eval", str(data), "--out", str(sheet), "--backend", "openai"])
    assert result.exit_code == 2 and "--base-url" in result.output
    result = runner.invoke(app, ["vlm", "eval", str(data), "--out", str(sheet), "--backend", "evidence", "--judge-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 2 and "go together" in result.output
