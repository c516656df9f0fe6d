"""The command line's --sam option (scan, batch) and `safeview bench reproduce`, which runs
bench/reproduce.py of the source checkout with its arguments unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from safeview import cli
from safeview.cli import app
from tiny_sam import save_tiny_sam

runner = CliRunner()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def safeview(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command in a child process (bench reproduce's child writes to the real stdout)."""
    return subprocess.run([sys.executable, "-m", "safeview.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("sam"), scale=3.0)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    from safeview.synth import make_sample

    path = tmp_path_factory.mktemp("img") / "standin.png"
    Image.fromarray(make_sample("sexual", True, seed=3, size=96).image).save(path)
    return path


def test_sam_flags_are_checked_before_anything_runs(tmp_path, standin):
    result = runner.invoke(app, ["scan", str(standin), "--out", str(tmp_path / "o"), "--segmentation", "sam"])
    assert result.exit_code == 2 and "--segmentation sam needs --sam PATH" in result.output
    result = runner.invoke(app, ["scan", str(standin), "--out", str(tmp_path / "o"), "--sam", str(tmp_path)])
    assert result.exit_code == 2 and "--sam is for --segmentation sam, not --segmentation bass" in result.output
    result = runner.invoke(app, ["scan", str(standin), "--out", str(tmp_path / "o"), "--segmentation", "sam", "--sam", str(tmp_path / "none")])
    assert result.exit_code == 2 and "none: is not a directory; give a local SAM checkpoint directory" in result.output
    result = runner.invoke(app, ["batch", str(standin), "--out", str(tmp_path / "b"), "--segmentation", "sam"])
    assert result.exit_code == 2 and "--segmentation sam needs --sam PATH" in result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


def test_scan_with_sam(tmp_path, standin, tiny_sam):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(standin), "--out", str(out), "--models", "demo-sexual",
                                 "--segmentation", "sam", "--sam", str(tiny_sam), "--json"])
    assert result.exit_code == 1, result.output  # 1: the stand-in is unsafe
    row = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert row["verdict"] == "unsafe"
    assert all(cf["segmentation"] == "sam" for cf in row["counterfactuals"])


def test_bench_reproduce_shows_reproduce_help():
    done = safeview("bench", "reproduce", "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: reproduce.py" in done.stdout and "--sam SAM" in done.stdout and "--tables" in done.stdout


def test_bench_reproduce_needs_a_source_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "source_root", lambda: tmp_path)
    result = runner.invoke(app, ["bench", "reproduce", "--n", "1"])
    assert result.exit_code == 2
    assert "needs a source checkout" in result.output and len(result.output.strip().splitlines()) == 1


def test_bench_reproduce_passes_arguments_and_exit_code(tmp_path, tiny_sam):
    bad = safeview("bench", "reproduce", "--tables", "4", "--sam", str(tmp_path / "none"), "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "none: is not a directory" in bad.stderr
    out = tmp_path / "repro"
    done = safeview("bench", "reproduce", "--n", "1", "--categories", "sexual", "--tables", "4", "--size", "96",
                    "--threads", "1", "--sam", str(tiny_sam), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["tables"]["4"][-1] == "cse fullgrad / sam" and results["meta"]["sam"] == str(tiny_sam)
    assert results["summaries"]["cse fullgrad / sam"]["sexual"]["images"] == 1
    assert "cse fullgrad / sam" in (out / "tables.md").read_text()
