"""Training and evaluation throughput (images/s) of ResNet-18 and ResNet-50 at 224², through the
real entry points (``train_classifier``, ``evaluate_classifier``) with JPEG decoding in DataLoader
worker processes (the in-memory cache is switched off, so every epoch decodes from disk).

    .venv/bin/python bench/train.py --archs resnet18,resnet50 --images 80 --batch-size 16 --workers 2 --out bench/results/train.md

The images are random noise (throughput does not depend on content). Training images/s is timed
over the optimisation steps after the first (forward, backward, AdamW step, loading included);
evaluation images/s over a whole ``evaluate_classifier`` pass (decoding included).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from safeview.evaluate import evaluate_classifier
from safeview.train import train_classifier


def make_images(root: Path, n: int, *, size: int = 256, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / ("safe" if i % 2 else "unsafe")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)


def measure(arch: str, data: Path, out: Path, *, batch_size: int, workers: int, device: str, image_size: int) -> dict:
    stamps: list[tuple[float, int]] = []

    def on_event(event) -> None:
        if event.kind == "step":
            stamps.append((time.perf_counter(), event.step))

    clf = train_classifier(
        data, category="bench", out=out / f"{arch}.safeview", arch=arch, image_size=image_size, epochs=1,
        batch_size=batch_size, workers=workers, device=device, cache_limit_mb=0, progress=on_event,
    )
    n_train = clf.metadata["n_images"]["train"]
    last_batch = n_train - (len(stamps) - 1) * batch_size
    timed_images = (len(stamps) - 2) * batch_size + last_batch  # steps after the first
    train_ips = timed_images / (stamps[-1][0] - stamps[0][0])
    clf.device = device
    clf.module.to(device)
    t0 = time.perf_counter()
    report = evaluate_classifier(clf, data, workers=workers, batch_size=batch_size)
    eval_ips = report["n_images"] / (time.perf_counter() - t0)
    return {"arch": arch, "train_ips": train_ips, "train_images": timed_images, "eval_ips": eval_ips, "eval_images": report["n_images"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="resnet18,resnet50")
    parser.add_argument("--images", type=int, default=80, help="Images in the random dataset (80 %% train).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file for the results table.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_images(data, args.images)
        for arch in args.archs.split(","):
            row = measure(arch, data, Path(tmp), batch_size=args.batch_size, workers=args.workers, device=args.device, image_size=args.image_size)
            rows.append(row)
            print(f"{arch}: train {row['train_ips']:.1f} img/s over {row['train_images']} images, eval {row['eval_ips']:.1f} img/s over {row['eval_images']}")
    hardware = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    lines = [
        "# Training and evaluation throughput",
        "",
        f"`bench/train.py --archs {args.archs} --images {args.images} --batch-size {args.batch_size} --image-size {args.image_size} --workers {args.workers}`",
        f"on {args.device} ({hardware}), torch {torch.__version__}; one run.",
        "",
        "| architecture | input | train images/s | eval images/s |",
        "|---|---|---|---|",
        *(f"| {r['arch']} | {args.image_size}² | {r['train_ips']:.1f} | {r['eval_ips']:.1f} |" for r in rows),
        "",
    ]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
