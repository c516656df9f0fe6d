"""A tiny run of bench/reproduce.py end to end, on a hand-made detector of the sexual stand-in's
pink (the demo models are not needed)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from safeview.classify import IMAGENET_MEAN, IMAGENET_STD, Classifier, Preprocess

pytest.importorskip("lime")
SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "reproduce.py"


class PinkDetector(nn.Module):
    """'unsafe' grows with the fraction of pixels close to the rings' pink; the 1×1 conv gives the
    CAMs a spatial layer."""

    def __init__(self) -> None:
        super().__init__()
        pink = (torch.tensor([232, 150, 172]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        self.register_buffer("pink", pink.view(1, 3, 1, 1))
        self.conv = nn.Conv2d(1, 1, 1)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight[:] = 1.0
            self.conv.bias[:] = 0.0
            self.fc.weight[:] = torch.tensor([[-60.0], [60.0]])
            self.fc.bias[:] = torch.tensor([1.0, -1.0])

    def forward(self, x):
        close = torch.relu(1 - ((x - self.pink) ** 2).sum(1, keepdim=True) / 0.2)
        return self.fc(torch.relu(self.conv(close)).mean(dim=(2, 3)))


def test_methods_table_end_to_end(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("bench_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_reproduce", module)
    spec.loader.exec_module(module)
    detector = Classifier.from_module(
        PinkDetector(), ["safe", "unsafe"], ["unsafe"], category="sexual", preprocess=Preprocess(resize=(96, 96))
    )
    monkeypatch.setattr(module, "load_classifier", lambda name: detector)
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--n", "2", "--categories", "sexual", "--tables", "methods",
                                      "--lime-samples", "20", "--sedc-queries", "60", "--threads", "1", "--out", str(tmp_path)])
    module.main()
    results = json.loads((tmp_path / "results.json").read_text())
    names = results["tables"]["methods"]
    assert names == ["cse fullgrad / bass, leak-free default", "cse fullgrad / bass", "csra", "sedc", "lime",
                     "boxes of cse regions", "boxes of true stand-ins"]
    for name in names:
        summary = results["summaries"][name]["sexual"]
        assert summary["images"] == 2 and summary["flagged_pct"] == 100.0
        assert len(results["images"][name]["sexual"]) == 2
        assert {"leak_rate", "recall_median", "recall_p10", "area_ratio_median"} <= set(summary)
    assert results["summaries"]["csra"]["sexual"]["queries"] == 256
    assert results["summaries"]["boxes of true stand-ins"]["sexual"]["recall"] in (None, 1.0)
    cse = results["summaries"]["cse fullgrad / bass"]["sexual"]
    assert cse["minimal_pct"] in (None, 100.0)  # CSE prunes to a 1-minimal set
    assert (tmp_path / "table_methods.png").stat().st_size > 0
    assert "Methods compared" in (tmp_path / "tables.md").read_text()
