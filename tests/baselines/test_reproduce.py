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


def load_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_reproduce", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_methods_table_end_to_end(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    module = load_script(monkeypatch)
    detector = Classifier.from_module(
        PinkDetector(), ["safe", "unsafe"], ["unsafe"], category="sexual", preprocess=Preprocess(resize=(96, 96))
    )
    monkeypatch.setattr(module, "load_classifier", lambda name: detector)
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--n", "3", "--slow-n", "2", "--categories", "sexual", "--tables", "methods",
                                      "--lime-samples", "20", "--sedc-queries", "60", "--threads", "1", "--out", str(tmp_path)])
    module.main()
    results = json.loads((tmp_path / "results.json").read_text())
    every = ["cse fullgrad / bass, leak-free default", "cse fullgrad / bass", "csra, numROI 10", "csra, numROI 8", "sedc", "lime",
             "boxes of cse regions", "boxes of true stand-ins"]
    # SEDC and LIME ran on the first 2 images only: the full table leaves them out ...
    assert results["tables"]["methods"] == [m for m in every if m not in ("sedc", "lime")]
    for name in results["tables"]["methods"]:
        summary = results["summaries"][name]["sexual"]
        assert summary["images"] == 3 and summary["flagged_pct"] == 100.0 and summary["flagged"] == 3
        assert len(results["images"][name]["sexual"]) == 3
        assert {"leak_rate", "recall_median", "recall_p10", "area_ratio_median", "greedy_depth", "pruned_depth"} <= set(summary)
    # ... and a second table scores every method, CSE and CSRA included, on those same 2 images
    assert results["tables"]["methods, same images"] == every
    same = results["summaries_same_images"]
    seeds = {name: [r["seed"] for r in results["images"][name]["sexual"][:2]] for name in every}
    assert all(v == seeds["sedc"] for v in seeds.values())
    for name in every:
        assert same[name]["sexual"]["images"] == 2 and same[name]["sexual"]["flagged"] == 2
    cse_rows = results["images"]["cse fullgrad / bass"]["sexual"]
    found = [r for r in cse_rows[:2] if r["found"]]
    assert same["cse fullgrad / bass"]["sexual"]["depth"] == (sum(r["depth"] for r in found) / len(found) if found else None)
    assert results["summaries"]["csra, numROI 10"]["sexual"]["queries"] == 1024
    assert results["summaries"]["csra, numROI 8"]["sexual"]["queries"] == 256
    assert results["summaries"]["boxes of true stand-ins"]["sexual"]["recall"] in (None, 1.0)
    cse = results["summaries"]["cse fullgrad / bass"]["sexual"]
    for r in cse_rows:  # paper mode does not prune: greedy depth = final depth >= pruned depth
        if r["found"]:
            assert r["greedy_depth"] == r["depth"] >= r["pruned_depth"] >= (1 if r["depth"] else 0)
            assert r["minimal"] == (r["pruned_depth"] == r["depth"])
    assert cse["found_pct"] is not None
    assert results["meta"]["csra_num_roi"] == [10, 8]
    assert (tmp_path / "table_methods.png").stat().st_size > 0
    assert (tmp_path / "table_methods_same_images.png").stat().st_size > 0
    text = (tmp_path / "tables.md").read_text()
    assert "Methods compared (CSE" in text and "Methods compared on the same images" in text
    assert "same 2 images per category, of which flagged (and searched): sexual 2" in text
    assert "| pruned depth |" in text and "| leak rate % |" in text and "load average" in text


def test_shards_merge_into_the_single_process_rows(monkeypatch):
    """--jobs K runs images i % K == k in process k; merged, the rows are one process's rows in the
    same order, except their times, and the slow methods stay on the first --slow-n images."""
    import argparse

    torch.set_num_threads(1)
    module = load_script(monkeypatch)
    detector = Classifier.from_module(
        PinkDetector(), ["safe", "unsafe"], ["unsafe"], category="sexual", preprocess=Preprocess(resize=(64, 64))
    )
    monkeypatch.setattr(module, "load_classifier", lambda name: detector)
    monkeypatch.setattr(module, "SLOW_METHODS", ("csra, numROI 8",))  # fast stand-in for SEDC and LIME
    args = argparse.Namespace(n=5, seed=1, size=96, categories="sexual", tables="methods", model="m", sam=None, style="blur",
                              lime_samples=20, sedc_queries=60, slow_n=2, threads=1)
    names = ["cse fullgrad / bass", "csra, numROI 8", "boxes of true stand-ins"]
    every = module.configurations
    monkeypatch.setattr(module, "configurations", lambda *a: ({n: m for n, m in every(*a)[0].items() if n in names}, {}))
    one, _ = module.run_shard(args, 0, 1)
    shards = [module.run_shard(args, k, 2)[0] for k in range(2)]
    assert [r["index"] for r in shards[0]["cse fullgrad / bass"]["sexual"]] == [0, 2, 4]
    merged = module.merge_shards(shards)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    for name in names:
        assert strip(merged[name]["sexual"]) == strip(one[name]["sexual"])
    assert [r["index"] for r in merged["csra, numROI 8"]["sexual"]] == [0, 1]
    assert [r["index"] for r in merged["cse fullgrad / bass"]["sexual"]] == [0, 1, 2, 3, 4]


def test_a_method_scored_on_other_images_is_refused(monkeypatch):
    module = load_script(monkeypatch)
    rows = lambda seeds: {"sexual": [{"seed": s, "flagged": True} for s in seeds]}  # noqa: E731
    per_image = {"a": rows([1, 2, 3]), "b": rows([1, 2, 3]), "c": rows([1, 2, 4])}
    assert module.same_images(["a", "b"], per_image, ["sexual"]) == {"sexual": 3}
    assert module.same_images(["a", "c"], per_image, ["sexual"], 2) == {"sexual": 2}
    with pytest.raises(RuntimeError, match="same images"):
        module.same_images(["a", "c"], per_image, ["sexual"])


def test_prune_drops_regions_the_flip_does_not_need(monkeypatch):
    """A hand-made flip on a 2×2 grid: only cell 0 matters, so {0, 1, 2} prunes to {0}."""
    import numpy as np

    module = load_script(monkeypatch)
    from safeview.counterfactual import Counterfactual
    from safeview.obfuscate import Obfuscator
    from safeview.synth import make_sample

    sample = make_sample("sexual", True, seed=5, size=64)
    cells = [np.zeros((64, 64), bool) for _ in range(3)]
    cells[0][:32, :32], cells[1][:32, 32:], cells[2][32:, :32] = True, True, True
    fill = Obfuscator("fill")

    def classifier(batch):  # safe once cell 0 is black
        hidden = (np.asarray(batch)[:, :32, :32] == 0).all(axis=(1, 2, 3))
        return np.stack([hidden * 0.9 + 0.05, 1 - (hidden * 0.9 + 0.05)], axis=1)

    flip = lambda probs: np.asarray(probs)[:, 0] > 0.5  # noqa: E731
    ctx = module.Context(classifier, sample, 1, flip, fill)
    mask = cells[0] | cells[1] | cells[2]
    cf = Counterfactual(True, [2, 1, 0], [2, 1, 0], mask, [], [], 1, 0, fill(sample.image, mask))
    run = module.Run(cf, [cells[2], cells[1], cells[0]], 0.0, 0)
    assert module.prune(ctx, run) == (False, [2])
    one = module.Run(cf, [cells[0]], 0.0, 0)
    assert module.prune(ctx, one) == (True, [0])
