"""`make demo`'s verdicts: the bundled demo images scanned as `make demo` scans them (the three demo
models and Open-NSFW), each with the verdict its name promises: a benign photo or a distractor is
safe, a stand-in is unsafe in its own category and in no other."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from typer.testing import CliRunner

from safeview.cli import app

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "demo" / "images"


def _demo_command() -> list[str]:
    """The scan arguments of the Makefile's demo target, so this test follows it."""
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "safeview scan demo/images" in line)
    args = shlex.split(line.split("safeview", 1)[1].split("||")[0])
    return args


def test_make_demo_gives_every_bundled_image_its_verdict(tmp_path):
    args = _demo_command()
    assert args[:2] == ["scan", "demo/images"] and "--models" in args
    out = tmp_path / "demo-out"
    args = [str(IMAGES) if a == "demo/images" else str(out) if a == "demo-out" else a for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # something is unsafe, nothing failed
    rows = {Path(r["input"]["path"]).name: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {p.name for p in IMAGES.iterdir()}
    for name, row in rows.items():
        flagged = {c["category"] for c in row["categories"] if c["unsafe"]}
        if name.startswith("standin_"):
            category = name.removeprefix("standin_").rsplit("_", 1)[0]
            assert row["verdict"] == "unsafe" and flagged == {category}, (name, flagged)
        else:
            assert row["verdict"] == "safe" and not flagged, (name, flagged)
