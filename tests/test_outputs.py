"""A scan run's files: written atomically, never over an input, and at a cost per image that does
not grow with the number of inputs."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from safeview import outputs
from safeview.outputs import ScanRun
from safeview.pipeline import Safeguard


def test_a_run_resolves_its_inputs_once_not_once_per_image(red_classifier, red_scene, photo, tmp_path, monkeypatch):
    """Issue 18: every record used to build a store that resolved every input path again, which
    made a 500-image scan spend about 20 s on it (quadratic in the number of inputs)."""
    folder = tmp_path / "in"
    folder.mkdir()
    files = []
    for i, image in enumerate([red_scene[0], photo, np.ascontiguousarray(red_scene[0][:, ::-1])]):
        files.append(folder / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    stores = []
    real = outputs.FolderStore.__init__
    monkeypatch.setattr(outputs.FolderStore, "__init__", lambda self, *a, **k: stores.append(1) or real(self, *a, **k))
    guard = Safeguard([red_classifier], attributes=())
    with ScanRun(tmp_path / "out") as run:
        todo = run.todo(files)
        for path, result in zip(todo, guard.scan_many([str(p) for p in todo])):
            record = run.record(path, result)
            assert "verdict" in record, record
    assert len(stores) == 1
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [line["verdict"] for line in lines] == ["unsafe", "safe", "unsafe"]
