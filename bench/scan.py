"""`safeview scan` throughput on a folder: images/s and peak RSS with images classified one at a
time (``--batch-size 1``, what the pipeline did before ``Safeguard.scan_many``) and in groups, in
the same run, on the same N synthetic-benchmark PNGs (drawn stand-ins on every fifth image).

Each configuration is the real CLI in a fresh process (``safeview scan DIR --out OUT``), so the
figures include model loading, decoding, CSE on the unsafe images, the per-image JSON and assets
and the HTML report. Peak RSS is that of the process tree, sampled every 0.2 s.

    python bench/scan.py --n 500 --models default,demo --batch-sizes 1,8 --out bench/results/scan.md

``--compare DIR`` runs every configuration a second time with another checkout's ``src`` first on
``PYTHONPATH`` (e.g. a ``git worktree`` of an older commit), alternating with this one, for a
before/after in the same run on the same images and models. ``--variants`` adds rows of this
checkout with more arguments (``;``-separated, e.g. ``"--workers 1"``), and ``--repeat N`` runs the
whole alternation N times and reports each configuration's median: on a shared machine one run of
each is not enough to tell a 15 % change from the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import run_measured  # noqa: E402
from segment import emit  # noqa: E402


def make_images(folder: Path, n: int, size: int) -> None:
    """N PNGs from the synthetic benchmark, a stand-in drawn on every fifth, cached in ``folder``."""
    from PIL import Image

    from safeview.synth import CATEGORIES, make_sample

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"{i:06d}.png"
        if not path.exists():
            Image.fromarray(make_sample(CATEGORIES[i % 3], unsafe=i % 5 == 0, seed=10_000 + i, size=size).image).save(path)


def run_scan(images: Path, models: str, batch_size: int, threads: int, src: Path | None = None, extra: str = "") -> dict:
    """One ``safeview scan`` in a fresh process (with ``src`` first on the path, when given): wall
    seconds, peak RSS, verdict counts."""
    out = Path(tempfile.mkdtemp(prefix=f"scan-{models}-{batch_size}-"))
    cmd = [str(Path(sys.executable).with_name("safeview")), "scan", str(images), "--out", str(out),
           "--models", models, "--batch-size", str(batch_size), "--force", *extra.split()]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    code, _, stderr, wall, peak_mb = run_measured(cmd, env)
    if code not in (0, 1):  # 1: something is unsafe (the CLI's documented exit code), not a failure
        raise SystemExit(f"safeview scan --models {models} --batch-size {batch_size} failed: {stderr.strip()[-500:]}")
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {
        "code": "this checkout" if src is None else f"{src.parent.name} ({_commit(src.parent)})",
        "models": models,
        "batch_size": batch_size,
        "images": len(results),
        "unsafe": sum(r["verdict"] == "unsafe" for r in results),
        "wall_s": wall,
        "images_per_s": len(results) / wall,
        "peak_rss_mb": peak_mb,
        "cse_s": sum(r["timings"].get("attribute", 0) + r["timings"].get("segment", 0) + r["timings"].get("search", 0) for r in results),
        "classify_s": sum(r["timings"]["classify"] for r in results),
    }


def _median(runs: list[dict]) -> dict:
    """One configuration's runs as one row: the median of every measured figure, and each run's images/s."""
    import numpy as np

    row = dict(runs[0])
    for key in ("wall_s", "images_per_s", "peak_rss_mb", "cse_s", "classify_s"):
        row[key] = float(np.median([r[key] for r in runs]))
    row["runs"] = [r["images_per_s"] for r in runs]
    return row


def _commit(tree: Path) -> str:
    import subprocess

    done = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", default="default,demo", help="comma-separated model sets, each a row")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads of the scan process")
    parser.add_argument("--images", type=Path, default=Path(tempfile.gettempdir()) / "safeview-scan-bench")
    parser.add_argument("--scan-args", default="", help="more arguments for every safeview scan, e.g. '--attributes none'")
    parser.add_argument("--compare", type=Path, default=None, help="another checkout, run alongside (its src/ first on the path)")
    parser.add_argument("--variants", default="", help="';'-separated extra arguments, each a further row of this checkout")
    parser.add_argument("--repeat", type=int, default=1, help="run every configuration this many times, alternating; medians reported")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    make_images(args.images, args.n, args.size)
    load_before = os.getloadavg()[0]
    trees = [(None, "")] if args.compare is None else [(args.compare.resolve() / "src", ""), (None, "")]
    trees += [(None, variant.strip()) for variant in args.variants.split(";") if variant.strip()]
    runs: dict[tuple, list[dict]] = {}
    for _ in range(args.repeat):
        for models in args.models.split(","):
            for batch_size in map(int, args.batch_sizes.split(",")):
                for src, variant in trees:
                    row = run_scan(args.images, models, batch_size, args.threads, src, f"{args.scan_args} {variant}".strip())
                    row["code"] += f" {variant}" if variant else ""
                    runs.setdefault((models, batch_size, src, variant), []).append(row)
                    print(json.dumps(row), flush=True)
    rows = [_median(found) for found in runs.values()]
    lines = [
        "# `safeview scan` throughput",
        "",
        f"Command: `python bench/scan.py {shlex.join(sys.argv[1:])}` ({platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} torch/numba threads, load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end). {args.n} synthetic-benchmark "
        f"PNGs of {args.size}², a stand-in on every fifth. Whole CLI runs (model loading, report included).",
        "",
        "| code | models | --batch-size | images | unsafe | images/s | wall s | classify s (sum) | CSE s (sum) | peak RSS MB | runs: images/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['code']} | {r['models']} | {r['batch_size']} | {r['images']} | {r['unsafe']} | {r['images_per_s']:.2f} | {r['wall_s']:.1f} "
            f"| {r['classify_s']:.1f} | {r['cse_s']:.1f} | {r['peak_rss_mb']:.0f} | {', '.join(f'{x:.2f}' for x in r['runs'])} |"
        )
    if args.repeat > 1:
        lines += ["", f"Each row is the median of {args.repeat} runs (images/s, wall s, sums and peak RSS each on its own), "
                      "the configurations alternating."]
    base = {r["models"]: r for r in rows if r["batch_size"] == 1 and r["code"] == "this checkout"}
    ratios = [f"{r['models']} at {r['batch_size']}: {r['images_per_s'] / base[r['models']]['images_per_s']:.2f}×"
              for r in rows if r["batch_size"] != 1 and r["models"] in base and r["code"] == "this checkout"]
    if ratios:
        lines += ["", "Speed-up over one image at a time: " + "; ".join(ratios) + "."]
    if args.compare is not None:
        old = {(r["models"], r["batch_size"]): r for r in rows if not r["code"].startswith("this checkout")}
        pairs = [f"{r['code']}, {r['models']} at {r['batch_size']}: {r['images_per_s'] / old[r['models'], r['batch_size']]['images_per_s']:.2f}×"
                 for r in rows if r["code"].startswith("this checkout")]
        lines += ["", "This checkout over the compared one (medians): " + "; ".join(pairs) + "."]
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
