"""Batch benchmark: images/s and peak memory of ``safeview batch`` with the local engine and with Ray
(Ray Data, a local runtime) on the same N synthetic-benchmark images, scan-only and with CSE on the
unsafe ones, Ray's overhead ratio against local, and a labelled extrapolation to a cluster.

Scan-only runs the real default classifier (Open-NSFW, 224², ResNet-50-like), which flags none of
the synthetic stand-ins, so no CSE runs: the cost is decoding, classification and the rationale.
The CSE runs use a small stand-in CNN (``small``, width 8, 48² input) whose bias is set so that
half of the images are unsafe, so CSE (the defaults: FullGrad, BASS, greedy search) runs on half of them.
Each configuration runs in a fresh process; peak memory is the largest summed RSS of that process
and all its descendants (worker processes, Ray's raylet, GCS and actors), sampled every 0.2 s.

    python bench/batch.py --n 2000 --workers 2 --out bench/results/batch.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

IMAGES_PER_DAY = 10_000_000
SECONDS_PER_DAY = 86_400


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    """N synthetic-benchmark PNGs (benign backgrounds; drawn stand-ins on half), cached in ``folder``."""
    from PIL import Image

    from safeview.synth import CATEGORIES, make_sample

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:06d}.png"
        if not path.exists():
            Image.fromarray(make_sample(CATEGORIES[i % 3], unsafe=i % 2 == 0, seed=i, size=size).image).save(path)
        paths.append(path)
    return paths


def stand_in_classifier(paths: list[Path], *, unsafe_fraction: float = 0.5):
    """The small seeded CNN with its unsafe bias set so ``unsafe_fraction`` of ``paths`` is unsafe."""
    import torch
    from PIL import Image

    from safeview import nets
    from safeview.classify import Classifier, Preprocess

    torch.manual_seed(0)
    clf = Classifier.from_module(
        nets.build("small", 2, width=8), ["safe", "unsafe"], ["unsafe"], name="stand-in", category="sexual",
        preprocess=Preprocess(resize=(48, 48)),
    )
    sample = paths[:: max(1, len(paths) // 200)]
    with torch.no_grad():
        logits = clf.logits(clf.tensor([np.asarray(Image.open(p).convert("RGB")) for p in sample])).numpy()
        margin = logits[:, 1] - logits[:, 0]
        clf.module.fc.bias[1] -= float(np.quantile(margin, 1.0 - unsafe_fraction))
    return [clf]


def _tree_rss(root: int) -> int:
    """Summed resident memory (bytes) of ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * page
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[int, str, str, float, float]:
    """Run ``cmd``; returns (exit code, stdout, stderr, wall seconds, peak RSS of its process tree in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    return proc.returncode, stdout, stderr, time.perf_counter() - start, peak[0] / 2**20


def run_one(engine: str, mode: str, images: Path, workers: int, batch_size: int) -> dict:
    """One configuration in a fresh process; returns the summary plus wall time and peak memory."""
    out = Path(tempfile.mkdtemp(prefix=f"batch-{engine}-{mode}-"))
    cmd = [sys.executable, __file__, "--one", engine, mode, str(images), str(out), str(workers), str(batch_size)]
    code, stdout, stderr, wall, peak_mb = run_measured(cmd)
    if code:
        raise SystemExit(f"{engine}/{mode} failed with exit code {code}: {stderr.strip()[-500:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    summary.update(wall_s=wall, peak_rss_mb=peak_mb)
    return summary


def _one(engine: str, mode: str, images: str, out: str, workers: str, batch_size: str) -> None:
    from safeview.batch import run_batch

    paths = sorted(Path(images).glob("*.png"))
    models = "default" if mode == "scan" else stand_in_classifier(paths)
    summary = run_batch(images, out, engine=engine, models=models, workers=int(workers), batch_size=int(batch_size))
    print(json.dumps(summary))


def report(results: dict, args, n: int) -> str:
    import ray
    import torch

    lines = [
        "# Batch scanning: local engine vs Ray Data",
        "",
        f"Command: `python bench/batch.py --n {n} --workers {args.workers} --batch-size {args.batch_size}` "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
        f"torch {torch.__version__}, ray {ray.__version__}, Python {platform.python_version()}). "
        f"{n} synthetic-benchmark PNGs of {args.size}² (half with drawn stand-ins).",
        "",
        "images/s counts from the start of scanning (model loading in the workers included) to the last "
        "written part; wall includes process start, input listing, hashing, Ray start-up and the final table.",
        "",
        "| engine | mode | model | scanned | unsafe | images/s | wall s | peak RSS (MB, process tree) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (engine, mode), r in results.items():
        model = "Open-NSFW" if mode == "scan" else "stand-in CNN (50 % flagged)"
        lines.append(
            f"| {engine} | {'scan only' if mode == 'scan' else 'scan + CSE on unsafe'} | {model} | {r['scanned']} | "
            f"{r['verdicts'].get('unsafe', 0)} | {r['images_per_s']:.2f} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "Ray overhead ratio (local images/s ÷ Ray images/s; > 1 means Ray is slower):", ""]
    for mode in args.modes:
        if ("local", mode) in results and ("ray", mode) in results:
            ratio = results[("local", mode)]["images_per_s"] / results[("ray", mode)]["images_per_s"]
            lines.append(f"- {mode}: {ratio:.2f}")
    if ("local", "scan") in results:
        per_core = results[("local", "scan")]["images_per_s"] / args.workers
        needed = IMAGES_PER_DAY / SECONDS_PER_DAY
        cores = needed / per_core
        lines += [
            "",
            "## Extrapolation to 10 million images a day (on paper, not measured)",
            "",
            f"- **Measured**: {per_core:.2f} images/s per core, scan-only with Open-NSFW, local engine, this machine "
            "(2 shared cores, other jobs running: a pessimistic figure).",
            f"- **Needed**: 10 M / 86 400 s = {needed:.0f} images/s sustained.",
            "- **Assumed**: throughput scales linearly with cores (each Ray actor is independent, no shared state; "
            "the only shared step is the driver writing Parquet parts, which is cheap), 16-core CPU nodes at 80 % "
            "utilisation, and an unsafe rate low enough that CSE is a small addition (CSE costs a multiple of a scan "
            "per unsafe image; see the CSE rows and scale by the platform's unsafe rate).",
            f"- **CPU only**: {cores:.0f} cores → about {int(np.ceil(cores / (16 * 0.8)))} nodes of 16 cores.",
            "- **With GPUs**: not measured here (no GPU on this machine). Assuming a ResNet-50-class model at "
            "~1 000 images/s per modern GPU in batches (a published order of magnitude for ResNet-50 inference, "
            "not measured by SafeView), one GPU node covers the classification; decoding then needs "
            f"{needed / 200:.1f} cores at an assumed ~200 PNG/JPEG decodes/s per core.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        import torch

        torch.set_num_threads(1)
        _one(*sys.argv[2:8])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=2, help="worker processes / Ray actors")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--modes", nargs="+", default=["scan", "cse"], choices=["scan", "cse"])
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--images", type=Path, default=Path(tempfile.gettempdir()) / "safeview-batch-bench")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args()

    folder = args.images / f"{args.size}"
    make_images(folder, args.n, args.size)
    subset = Path(tempfile.mkdtemp(prefix="batch-input-"))
    for i in range(args.n):  # exactly N images, whatever the cache holds
        (subset / f"{i:06d}.png").symlink_to(folder / f"{i:06d}.png")
    results = {}
    for mode in args.modes:
        for engine in args.engines:
            results[(engine, mode)] = run_one(engine, mode, subset, args.workers, args.batch_size)
            r = results[(engine, mode)]
            print(f"{engine:5s} {mode:4s} {r['images_per_s']:.2f} img/s wall {r['wall_s']:.1f}s peak {r['peak_rss_mb']:.0f} MB", flush=True)
    text = report(results, args, args.n)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
