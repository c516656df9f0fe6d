"""CSE on the synthetic benchmark, as users get it (``safeview.counterfactual.cse``, the same unit
``Safeguard`` runs): the paper's metrics (found %, depth, obfuscated %) and what the paper could
not measure without ground truth — leakage against the exact stand-in masks (recall, leak rate,
area ratio, safe pixels left bit-identical, :mod:`safeview.leakage`), verification and time.

    .venv/bin/python bench/cse.py --n 600 --seed 77 --modes hide,paper,minimal --out bench/out/cse.json
    .venv/bin/python bench/cse.py --n 90 --modes hide --set margin=0.2 --set completion_ratio=0.7

Images come from ``safeview.synth`` with a seed the demo models never saw in training (they were
trained on seed 0), all unsafe, split evenly across the three categories; each category's demo
model scans its own category's images, as the paper pairs classifiers and datasets. ``--model``
replaces the demo models (``{category}`` is filled in); ``--model fragment`` uses the tests'
hand-built classifier that keys on one colour of the sexual stand-in (``tests/scenes.py``,
``ColourFragmentDetector``), the case a minimal flip leaks on. Only flagged images are searched.

An output is *reported safe* in ``hide`` mode when ``cse`` verified it (every check of
:mod:`safeview.verify` passed); ``paper`` and ``minimal`` outputs are scored as their own criterion
reports them (the classifier flipped at 0.5), since that is what the paper counted. *Robust* is the
share of outputs reported safe that the classifier still calls safe on four re-upload copies that
verification never checks (JPEG 50, 0.7× rescale, 80 % centre crop, +25 brightness).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from safeview.classify import load_classifier
from safeview.counterfactual import CSEConfig, cse
from safeview.leakage import leakage, summarise_leakage
from safeview.synth import CATEGORIES, make_sample
from safeview.threads import set_threads


def parse_method(spec: str) -> tuple[str, dict]:
    """``"bass:attribution_weight=0+i_std=0.03"`` -> ``("bass", {"attribution_weight": 0, "i_std": 0.03})``."""
    name, _, rest = spec.partition(":")
    return name, {k: json.loads(v) for k, v in (item.split("=") for item in rest.split("+") if item)}


def _mean(values: list[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def fmt(v, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def classifier_for(spec: str, category: str):
    """``--model``: a name or path with ``{category}`` filled in, or ``fragment`` (tests/scenes.py)."""
    if spec == "fragment":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from scenes import ColourFragmentDetector

        return ColourFragmentDetector.build(category=category)
    return load_classifier(spec.format(category=category))


def held_out_copies(image: np.ndarray) -> list[np.ndarray]:
    """Re-upload copies verification never checks (so robustness is measured, not assumed): JPEG
    at quality 50, a 0.7× rescale, a centre crop of 80 % enlarged back, a brighter copy."""
    import io

    import cv2
    from PIL import Image

    h, w = image.shape[:2]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=50)
    jpeg = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    small = cv2.resize(image, (round(w * 0.7), round(h * 0.7)), interpolation=cv2.INTER_AREA)
    rescaled = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    dy, dx = h // 10, w // 10
    crop = cv2.resize(image[dy : h - dy, dx : w - dx], (w, h), interpolation=cv2.INTER_LINEAR)
    bright = np.clip(image.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    return [jpeg, rescaled, crop, bright]


def score_image(classifier, sample, config: CSEConfig) -> dict:
    """One image: flagged?, then CSE's result scored against the sample's exact mask, and whether
    an output reported safe stays safe (unsafe probability below ``1 - threshold``) on
    :func:`held_out_copies`."""
    probs = classifier.predict_proba(sample.image[None])[0]
    p_unsafe = float(probs[classifier.unsafe_indices].sum())
    row: dict = {"seed": sample.seed, "flagged": 1.0 - p_unsafe <= config.threshold}
    if not row["flagged"]:
        return row
    t = time.perf_counter()
    result = cse(classifier, sample.image, config=config, original_probabilities=probs)
    seconds = time.perf_counter() - t
    after = float(np.asarray(result.search.final_probabilities)[classifier.unsafe_indices].sum())
    row.update(
        found=result.found,
        verified=result.verified,
        flip_safe=bool(result.found and 1.0 - after > config.threshold),
        depth=len(result.regions),
        greedy_depth=result.search.greedy_depth,
        completed=len(result.completed),
        n_regions=int(result.segments.max()) + 1,
        queries=result.queries,
        seconds=seconds,
        stages=result.timings,
        obfuscated=result.obfuscated_fraction,
        truth=float(sample.mask.mean()),
        failures=result.verification.failures() if result.verification else None,
        held_out_safe=None if result.output is None else bool(
            (classifier.unsafe_probability(classifier.predict_proba(np.stack(held_out_copies(result.output))))
             < 1.0 - config.threshold).all()
        ),
        **leakage(result.mask, sample.mask, sample.image, result.output if result.found else None),
    )
    return row


def _pct_true(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return 100.0 * sum(known) / len(known) if known else None


def summarise(rows: list[dict], mode: str) -> dict:
    flagged = [r for r in rows if r["flagged"]]
    found = [r for r in flagged if r["found"]]
    for r in flagged:  # what this mode would show a person as safe
        r["reported_safe"] = r["verified"] if mode == "hide" else r["flip_safe"]
    verified = [r for r in flagged if r["verified"]]
    shown = [r for r in flagged if r["reported_safe"]]
    return {
        "images": len(rows),
        "flagged": len(flagged),
        "found_pct": 100.0 * len(found) / len(flagged) if flagged else None,
        "verified_pct": 100.0 * len(verified) / len(flagged) if flagged else None,
        "reported_safe_pct": 100.0 * len(shown) / len(flagged) if flagged else None,
        "depth": _mean([r["depth"] for r in shown]),
        "greedy_depth": _mean([r["greedy_depth"] for r in shown]),
        "completed": _mean([r["completed"] for r in shown]),
        "obfuscated_pct": _mean([100 * r["obfuscated"] for r in shown]),
        "truth_pct": _mean([100 * r["truth"] for r in shown]),
        "iou": _mean([r["iou"] for r in shown]),
        "queries": _mean([r["queries"] for r in flagged]),
        "seconds": _mean([r["seconds"] for r in flagged]),
        **summarise_leakage(flagged),
        # robustness: the share of outputs reported safe that stay safe on re-upload copies that
        # verification never checked (held_out_copies)
        "robust_pct": _pct_true([r.get("held_out_safe") for r in shown]),
    }


COLUMNS = (
    ("flagged", "flagged", "d"),
    ("found %", "found_pct", ".1f"),
    ("reported safe %", "reported_safe_pct", ".1f"),
    ("leak rate %", "leak_rate", "pct"),
    ("recall median (p10)", None, None),
    ("area ratio median", "area_ratio_median", ".2f"),
    ("safe px identical % median (mean)", None, None),
    ("depth (greedy)", None, None),
    ("obfuscated % (truth %)", None, None),
    ("robust % (held-out copies)", "robust_pct", ".1f"),
    ("queries", "queries", ".1f"),
    ("s/image", "seconds", ".3f"),
)


def _cell(s: dict, key: str | None, spec: str | None, title: str) -> str:
    if key is None:
        if title.startswith("recall"):
            return f"{fmt(s['recall_median'], '.3f')} ({fmt(s['recall_p10'], '.3f')})"
        if title.startswith("safe px"):
            pct = lambda v: None if v is None else 100 * v  # noqa: E731
            return f"{fmt(pct(s['safe_identical_median']))} ({fmt(pct(s['safe_identical_mean']))})"
        if title.startswith("depth"):
            return f"{fmt(s['depth'], '.2f')} ({fmt(s['greedy_depth'], '.2f')})"
        return f"{fmt(s['obfuscated_pct'])} ({fmt(s['truth_pct'])})"
    if spec == "pct":
        return fmt(None if s[key] is None else 100 * s[key], ".1f")
    return fmt(s[key], spec)


def markdown(results: list[dict]) -> str:
    head = "| mode | category | " + " | ".join(c[0] for c in COLUMNS) + " |\n|---|---|" + "---:|" * len(COLUMNS) + "\n"
    lines = [
        f"| {r['label']} | {r['category']} | " + " | ".join(_cell(r, key, spec, title) for title, key, spec in COLUMNS) + " |"
        for r in results
    ]
    return head + "\n".join(lines) + "\n"


def resummarise(run: dict) -> str:
    """The Markdown table of a saved run, recomputed from its per-image rows."""
    results = []
    for r in run["results"]:
        if r["category"] == "all":
            continue
        results.append({"label": r["mode"], "category": r["category"], **summarise(r["rows"], r["mode"])})
    for mode in dict.fromkeys(r["mode"] for r in run["results"]):
        pooled = [row for r in run["results"] if r["mode"] == mode and r["category"] != "all" for row in r["rows"]]
        results.append({"label": mode, "category": "all", **summarise(pooled, mode)})
    meta = run["meta"]
    return f"`{meta.get('command', '')}` (load average {meta.get('load_average_start', float('nan')):.2f} at start, " \
           f"{meta.get('load_average_end', float('nan')):.2f} at end)\n\n" + markdown(results)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="images in total, split evenly across categories")
    parser.add_argument("--seed", type=int, default=77, help="held-out benchmark seed (the demo models trained on 0)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--stride", type=int, default=None,
                        help="seeds are seed·10⁶ + category index·stride + i (default: images per category; "
                             "100000 gives bench/reproduce.py's images)")
    parser.add_argument("--modes", default="hide,paper", help="comma-separated CSE modes: hide, paper, minimal")
    parser.add_argument("--segmentation", default="bass", help="method, optionally with parameters: bass:attribution_weight=0")
    parser.add_argument("--attribution", default="fullgrad")
    parser.add_argument("--style", default="blur")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CSEConfig field, e.g. margin=0.2")
    parser.add_argument("--model", default="demo-{category}", help="classifier name or checkpoint path; {category} is filled in")
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/out/cse.json"))
    parser.add_argument("--summarise", type=Path, default=None, metavar="JSON",
                        help="print the table of an earlier run's JSON (its per-image rows), scoring nothing")
    args = parser.parse_args()
    if args.summarise:
        print(resummarise(json.loads(args.summarise.read_text())))
        return
    set_threads(args.threads)
    categories = args.categories.split(",")
    per = args.n // len(categories)
    method, params = parse_method(args.segmentation)
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    base = CSEConfig(attribution=args.attribution, segmentation=method, segmentation_params=params, style=args.style, **overrides)
    results = []
    load = os.getloadavg()[0]
    for mode in args.modes.split(","):
        config = replace(base, mode=mode)
        for category in categories:
            classifier = classifier_for(args.model, category)
            # a category's images do not depend on which other categories run (--categories)
            seeds = [args.seed * 1_000_000 + CATEGORIES.index(category) * (args.stride or per) + i for i in range(per)]
            t0 = time.perf_counter()
            rows = [score_image(classifier, make_sample(category, True, seed=s, size=args.size), config) for s in seeds]
            r = {"mode": mode, "label": mode, "category": category, **summarise(rows, mode), "rows": rows}
            r["wall_seconds"] = time.perf_counter() - t0
            results.append(r)
            print(markdown([r]).splitlines()[-1], flush=True)
        pooled = [row for r in results if r["mode"] == mode for row in r["rows"]]
        results.append({"mode": mode, "label": mode, "category": "all", **summarise(pooled, mode)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python bench/cse.py " + " ".join(sys.argv[1:]), "n": args.n, "seed": args.seed, "stride": args.stride, "size": args.size,
        "config": {k: (dict(v) if hasattr(v, "items") else v) for k, v in base.__dict__.items()},
        "threads": args.threads, "torch": torch.__version__, "load_average_start": load, "load_average_end": os.getloadavg()[0],
    }
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str) + "\n")
    print()
    print(markdown(results))
    print(f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
