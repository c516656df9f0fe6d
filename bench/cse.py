"""CSE on the synthetic benchmark: the paper's metrics (counterfactual found %, average depth,
average % obfuscated) plus what the paper could not measure without ground truth — IoU,
precision and recall of the obfuscated mask against the exact stand-in mask — and time per stage.

    .venv/bin/python bench/cse.py --n 300 --seed 1 --segmentation bass,bass:attribution_weight=0,slic --out bench/out/cse.json

Images come from ``safeview.synth`` with a seed the demo models never saw in training (they were
trained on seed 0), all unsafe, split evenly across the three categories; each category's demo
model scans its own category's images, as the paper pairs classifiers and datasets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from safeview.classify import load_classifier
from safeview.pipeline import Safeguard
from safeview.threads import set_threads
from safeview.synth import CATEGORIES, make_sample

STAGES = ("classify", "attribute", "segment", "search", "recheck", "total")


def parse_method(spec: str) -> tuple[str, dict]:
    """``"bass:attribution_weight=0+i_std=0.03"`` -> ``("bass", {"attribution_weight": 0, "i_std": 0.03})``."""
    name, _, rest = spec.partition(":")
    return name, {k: json.loads(v) for k, v in (item.split("=") for item in rest.split("+") if item)}


def evaluate(category: str, seeds: list[int], *, attribution: str, segmentation: str, style: str, size: int) -> dict:
    clf = load_classifier(f"demo-{category}")
    method, params = parse_method(segmentation)
    guard = Safeguard(
        [clf], attribution=attribution, segmentation=method, segmentation_params=params, style=style, fallback="none"
    )
    rows = []
    for seed in seeds:
        sample = make_sample(category, True, seed=seed, size=size)
        result = guard.scan(sample.image)
        row = {"seed": seed, "flagged": result.verdict == "unsafe", "timings": result.timings}
        if result.counterfactuals:
            cf = result.counterfactuals[0]
            mask = cf.mask.to_mask()
            inter = float((mask & sample.mask).sum())
            row.update(
                found=cf.found,
                depth=cf.depth,
                greedy_depth=cf.greedy_depth,
                n_regions=cf.n_regions,
                queries=cf.queries,
                obfuscated=float(mask.mean()),
                truth=float(sample.mask.mean()),
                iou=inter / max(1.0, float((mask | sample.mask).sum())),
                precision=inter / max(1.0, float(mask.sum())),
                recall=inter / max(1.0, float(sample.mask.sum())),
            )
        rows.append(row)
    return summarise(category, rows)


def _mean(values: list[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def summarise(category: str, rows: list[dict]) -> dict:
    flagged = [r for r in rows if r["flagged"]]
    found = [r for r in flagged if r.get("found")]
    timings = {s: _mean([r["timings"].get(s, 0.0) for r in flagged]) for s in STAGES}
    return {
        "category": category,
        "images": len(rows),
        "flagged_pct": 100.0 * len(flagged) / max(1, len(rows)),
        "found_pct": 100.0 * len(found) / max(1, len(flagged)),
        "depth": _mean([r["depth"] for r in found]),
        "greedy_depth": _mean([r["greedy_depth"] for r in found]),
        "regions": _mean([r["n_regions"] for r in flagged]),
        "queries": _mean([r["queries"] for r in flagged]),
        "obfuscated_pct": _mean([100 * r["obfuscated"] for r in found]),
        "truth_pct": _mean([100 * r["truth"] for r in found]),
        "iou": _mean([r["iou"] for r in found]),
        "precision": _mean([r["precision"] for r in found]),
        "recall": _mean([r["recall"] for r in found]),
        "seconds": timings,
        "rows": rows,
    }


def fmt(v, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(results: list[dict]) -> str:
    head = (
        "| attribution | segmentation | category | flagged % | found % | depth (greedy) | obfuscated % (truth %) "
        "| IoU | precision | recall | queries | s/image (attr / seg / search / total) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in results:
        s = r["seconds"]
        lines.append(
            f"| {r['attribution']} | {r['segmentation']} | {r['category']} | {fmt(r['flagged_pct'])} | {fmt(r['found_pct'])} "
            f"| {fmt(r['depth'], '.2f')} ({fmt(r['greedy_depth'], '.2f')}) | {fmt(r['obfuscated_pct'])} ({fmt(r['truth_pct'])}) "
            f"| {fmt(r['iou'], '.3f')} | {fmt(r['precision'], '.3f')} | {fmt(r['recall'], '.3f')} | {fmt(r['queries'])} "
            f"| {fmt(s['attribute'], '.3f')} / {fmt(s['segment'], '.3f')} / {fmt(s['search'], '.3f')} / {fmt(s['total'], '.3f')} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="images in total, split evenly across categories")
    parser.add_argument("--seed", type=int, default=1, help="held-out benchmark seed (the demo models trained on 0)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--attribution", default="fullgrad", help="comma-separated methods")
    parser.add_argument(
        "--segmentation",
        default="bass,slic",
        help="comma-separated methods, each optionally with parameters: bass:attribution_weight=0+i_std=0.03",
    )
    parser.add_argument("--style", default="blur")
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/out/cse.json"))
    args = parser.parse_args()
    set_threads(args.threads)
    categories = args.categories.split(",")
    per = args.n // len(categories)
    results = []
    for attribution in args.attribution.split(","):
        for segmentation in args.segmentation.split(","):
            for ci, category in enumerate(categories):
                seeds = [args.seed * 1_000_000 + ci * per + i for i in range(per)]
                t0 = time.perf_counter()
                r = evaluate(category, seeds, attribution=attribution, segmentation=segmentation, style=args.style, size=args.size)
                r.update(attribution=attribution, segmentation=segmentation, wall_seconds=time.perf_counter() - t0)
                results.append(r)
                print(markdown([r]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"n": args.n, "seed": args.seed, "size": args.size, "style": args.style, "threads": args.threads, "torch": torch.__version__}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
