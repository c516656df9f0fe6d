"""Speed of SafeView's batched torch FullGrad against pytorch-grad-cam's FullGrad, on ResNet-50 at
224² on the CPU (the paper's classifier; random weights, as timing does not depend on them).

One run times, per image: one forward+backward to the input (the floor any gradient method pays), our FullGrad
at batch 1 and 8, pytorch-grad-cam's FullGrad at batch 1 and 8, and the CAM methods at batch 1;
it reports medians with their min–max spread, the speed-up ratios, and how closely our
``per_channel=True`` map reproduces the library's. Usage::

    python bench/attribution.py [--threads 2] [--out bench/results/attribution.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision

from safeview.attribute import attribution_maps
from safeview.classify import Classifier, Preprocess


def timed(fn: Callable[[], object], reps: int, per: int, warm_up: bool = True) -> tuple[list[float], object]:
    """Run ``fn`` once to warm up (unless ``warm_up=False``), then ``reps`` times; seconds per
    image of each rep."""
    result = fn() if warm_up else None
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) / per)
    return times, result


def row(name: str, batch: int, times: list[float], baseline: float | None) -> str:
    median = statistics.median(times)
    ratio = f"{baseline / median:.1f}×" if baseline else ""
    return f"| {name} | {batch} | {median:.3f} | {min(times):.3f}–{max(times):.3f} | {len(times)} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of the fast methods (default 3; the library's batch-8 run gets 1)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "attribution.md")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clf = Classifier.from_module(torchvision.models.resnet50(weights=None, num_classes=2), ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(8)]
    targets = [1] * 8

    def floor(batch: int) -> Callable[[], None]:
        def run() -> None:
            x = clf.tensor(images[:batch]).requires_grad_(True)
            torch.autograd.grad(clf.logits(x)[:, 1].sum(), x)

        return run

    def method(name: str, batch: int, **params) -> Callable[[], list[np.ndarray]]:
        return lambda: attribution_maps(clf, images[:batch], targets[:batch], name, **params)

    lines = []
    reps = args.reps
    t_floor1, _ = timed(floor(1), reps, 1)
    t_floor8, _ = timed(floor(8), reps, 8)
    t_ours1, _ = timed(method("fullgrad", 1), reps, 1)
    t_ours8, _ = timed(method("fullgrad", 8), reps, 8)
    t_pc8, ours_pc = timed(method("fullgrad", 8, per_channel=True), reps, 8)
    t_lib1, _ = timed(method("fullgrad-ref", 1), reps, 1)
    t_lib8, lib = timed(method("fullgrad-ref", 8), 1, 8, warm_up=False)  # warm after batch 1
    r = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(ours_pc, lib)]
    lib_median = statistics.median(t_lib1)
    lines += [
        "| method | batch | s / image (median) | min–max | reps | pytorch-grad-cam FullGrad (batch 1) ÷ this |",
        "|---|---|---|---|---|---|",
        row("forward+backward (floor)", 1, t_floor1, lib_median),
        row("forward+backward (floor)", 8, t_floor8, lib_median),
        row("**SafeView FullGrad** (`fullgrad`)", 1, t_ours1, lib_median),
        row("**SafeView FullGrad** (`fullgrad`)", 8, t_ours8, lib_median),
        row("SafeView FullGrad, `per_channel=True`", 8, t_pc8, lib_median),
        row("pytorch-grad-cam FullGrad (`fullgrad-ref`)", 1, t_lib1, lib_median),
        row("pytorch-grad-cam FullGrad (`fullgrad-ref`)", 8, t_lib8, lib_median),
    ]
    for name in ("gradcam", "gradcam++", "xgradcam"):
        times, _ = timed(method(name, 1), reps, 1)
        lines.append(row(f"pytorch-grad-cam `{name}` (layer4)", 1, times, lib_median))

    summary = [
        f"- SafeView FullGrad vs pytorch-grad-cam FullGrad, same batch: {statistics.median(t_lib1) / statistics.median(t_ours1):.1f}× faster at batch 1, "
        f"{statistics.median(t_lib8) / statistics.median(t_ours8):.1f}× at batch 8 (per image).",
        f"- SafeView FullGrad costs {statistics.median(t_ours1) / statistics.median(t_floor1):.2f}× one forward+backward at batch 1, "
        f"{statistics.median(t_ours8) / statistics.median(t_floor8):.2f}× at batch 8.",
        f"- `per_channel=True` vs pytorch-grad-cam's map on the same 8 images: Pearson r min {min(r):.6f}, median {statistics.median(r):.6f}.",
        "- Ablation-CAM is not timed: on ResNet-50's layer4 it runs 2,048 ablated forwards per image.",
    ]
    command = f"PYTHONPATH=src python bench/attribution.py --threads {args.threads} --reps {args.reps}"
    header = [
        "# Attribution speed: FullGrad on ResNet-50, 224², CPU",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} torch threads, "
        f"Python {sys.version.split()[0]}; ResNet-50 (torchvision, random weights, 2 classes), 8 random 224×224 images, "
        "through `attribution_maps` (preprocessing and mapping back to the image included). "
        "The floor is one forward and one backward of the summed target logits to the input (no weight gradients, as FullGrad needs). "
        "Times are seconds per image after one warm-up run (the library's batch-8 run: one run, warm from batch 1).",
        "",
    ]
    text = "\n".join(header + lines + [""] + summary) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
