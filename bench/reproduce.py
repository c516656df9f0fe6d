"""Reproduce the paper's CSE tables on the synthetic benchmark and compare CSE with its baselines,
every method scored by the same code against the exact ground-truth masks.

    .venv/bin/python bench/reproduce.py --n 200 --out bench/results/reproduce
    .venv/bin/python bench/reproduce.py --n 4 --categories sexual --tables methods --lime-samples 100 --out /tmp/repro

Tables: ``3`` — attribution varied (FullGrad, Grad-CAM, Grad-CAM++, XGrad-CAM, Ablation-CAM) with
BASS fixed (the paper's Table 3); ``4`` — segmentation varied (BASS, SLIC, Felzenszwalb,
watershed, and SAM when ``--sam`` gives a local checkpoint) with FullGrad fixed (Table 4);
``methods`` — CSE (FullGrad + BASS) against CSRA (numROI = 10, the paper's comparison, and 8 as an
extra row), SEDC, LIME and box censoring (boxes of CSE's regions, and boxes of the true stand-ins
as a perfect NudeNet-style detector would draw them). Every table has CSE twice: in ``paper`` mode
(the paper's criterion) and with SafeView's leak-free default (``hide``: margin, evidence
completion, robust verification; found = verified).

Images are unsafe samples of ``safeview.synth`` at a held-out seed (the demo models trained on
seed 0); each category's demo model scans its own category's images, and only the images it
flags are searched. Every method of a table is scored on the same flagged images (checked).
``--slow-n N`` runs SEDC and LIME on the first N images per category only: the methods table then
leaves them out, and a second table, "same images", scores every method (CSE and CSRA included)
on those first N images.

Per row: flagged images, flagged %, counterfactual found % (of flagged), greedy depth (regions the
search had masked when it stopped; the paper's "Avg Depth"), pruned depth (the method's chosen
regions pruned one at a time, last first, while another class stays > 0.5: a measurement whose
queries are not charged), final depth (regions in the output: after the method's own pruning or
completion), average % obfuscated, IoU / precision / recall against the ground truth, the leakage
figures of ``safeview.leakage`` (recall median and 10th percentile, leak rate = outputs reported
safe with recall < 0.8, median area ratio), % of safe pixels left bit-identical, 1-minimal %
(no single chosen region can be dropped with the output still flipped), queries (images
classified) and seconds per image (attribution + segmentation + search). Quality figures average
over the found counterfactuals, costs over the flagged images. Written to ``--out``: one Markdown
file with every table, ``results.json`` (summaries and per-image rows) and one PNG per table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # LIME's sampler shows a progress bar per image

import numpy as np
import torch

from safeview.threads import set_threads
from safeview.baselines import box_censor, boxes_mask, component_boxes, csra, lime_counterfactual, quickshift_segments, sedc
from safeview.classify import Classifier, load_classifier
from safeview.counterfactual import Counterfactual, CSEConfig, cse
from safeview.leakage import leakage, summarise_leakage
from safeview.obfuscate import Obfuscator
from safeview.segment import segment
from safeview.synth import CATEGORIES, Sample, make_sample

_spec = importlib.util.spec_from_file_location("bench_cse", Path(__file__).with_name("cse.py"))
_cse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cse)
fmt, _mean = _cse.fmt, _cse._mean

ATTRIBUTIONS = ("fullgrad", "gradcam", "gradcam++", "xgradcam", "ablationcam")
SEGMENTATIONS = ("bass", "slic", "felzenszwalb", "watershed")
TABLES = ("3", "4", "methods")
#: baselines whose thousand-query searches ``--slow-n`` may run on fewer images
SLOW_METHODS = ("sedc", "lime")
#: CSE with the paper's configuration, the row the three tables share
CSE_KEY = "cse fullgrad / bass"
#: Table 4's ablation of the attribution guidance: BASS on the image alone
UNGUIDED_KEY = "cse fullgrad / bass, no guidance"
#: SafeView's leak-free default (margin, evidence completion, robust verification), in every table
HIDE_KEY = "cse fullgrad / bass, leak-free default"
#: CSRA's numROI (top regions whose 2**numROI subsets are classified): the paper's 10, then 8
CSRA_ROIS = (10, 8)
#: the methods table restricted to the images SEDC and LIME ran on (``--slow-n``)
SAME_KEY = "methods, same images"
TITLES = {
    "3": "Table 3: attribution method varied, BASS fixed",
    "4": "Table 4: segmentation method varied, FullGrad fixed",
    "methods": "Methods compared (CSE = FullGrad + BASS)",
    SAME_KEY: "Methods compared on the same images (the first --slow-n per category, the only ones SEDC and LIME ran on)",
}


def csra_key(num_roi: int) -> str:
    return f"csra, numROI {num_roi}"


@dataclass
class Run:
    """One method's result on one image: the counterfactual, the masks of its chosen regions (in
    ``cf.regions`` order, for the minimality check) and its cost."""

    cf: Counterfactual
    region_masks: list[np.ndarray]
    seconds: float
    queries: int


@dataclass
class Context:
    """What a method sees of one image; ``done`` holds the runs of earlier methods on it."""

    classifier: Classifier
    sample: Sample
    target: int
    flip: Callable[[np.ndarray], np.ndarray]
    obfuscator: Obfuscator
    done: dict[str, Run] = field(default_factory=dict)

    @property
    def shared(self) -> dict:
        """The arguments every method gets alike: source class, obfuscator, flip rule."""
        return {"source_class": self.target, "obfuscator": self.obfuscator, "flip_rule": self.flip}


def _segments_run(cf: Counterfactual, segments: np.ndarray, seconds: float) -> Run:
    return Run(cf, [segments == r for r in cf.regions], seconds, cf.queries)


def cse_method(attribution: str, segmentation: str, params: dict | None = None, mode: str = "paper") -> Callable[[Context], Run]:
    """CSE exactly as the pipeline runs it (``counterfactual.cse``), in ``mode``: ``paper`` for
    the paper's tables (the greedy prefix at the first flip), ``hide`` for the leak-free default,
    whose output counts as found only when verification passed."""

    def run(ctx: Context) -> Run:
        t = time.perf_counter()
        config = CSEConfig(mode=mode, attribution=attribution, segmentation=segmentation, segmentation_params=params or {},
                           style=ctx.obfuscator.style)
        res = cse(ctx.classifier, ctx.sample.image, ctx.target, config=config)
        found = res.verified if mode == "hide" else res.found
        cf = Counterfactual(
            found=found, regions=res.regions, greedy_regions=res.search.greedy_regions, mask=res.mask,
            probabilities=res.search.probabilities, final_probabilities=res.search.final_probabilities,
            source_class=ctx.target, queries=res.queries, output=res.output,
        )
        return Run(cf, [res.segments == r for r in res.regions], time.perf_counter() - t, res.queries)

    return run


def csra_method(num_roi: int) -> Callable[[Context], Run]:
    """CSRA with ``num_roi`` top regions (2**num_roi subsets classified, 32 per forward)."""

    def run(ctx: Context) -> Run:
        t = time.perf_counter()
        image = ctx.sample.image
        labels = segment(image, "slic", n_segments=30, compactness=50)
        cf = csra(ctx.classifier, image, classifier=ctx.classifier, segments=labels, top_k=num_roi, **ctx.shared)
        return _segments_run(cf, labels, time.perf_counter() - t)

    return run


def quickshift_method(search: Callable[..., Counterfactual], **options) -> Callable[[Context], Run]:
    """A baseline that searches quickshift superpixels (SEDC, LIME), timed with its segmentation."""

    def run(ctx: Context) -> Run:
        t = time.perf_counter()
        labels = quickshift_segments(ctx.sample.image)
        cf = search(ctx.classifier, ctx.sample.image, segments=labels, **options, **ctx.shared)
        return _segments_run(cf, labels, time.perf_counter() - t)

    return run


def boxes_method(evidence: str) -> Callable[[Context], Run]:
    """Box censoring of ``evidence``: ``cse`` (CSE's chosen mask, its cost added to the boxes') or
    ``truth`` (the ground truth, a perfect detector at no cost)."""

    def run(ctx: Context) -> Run:
        base = ctx.done[CSE_KEY] if evidence == "cse" else None
        mask = base.cf.mask if base else ctx.sample.mask
        t = time.perf_counter()
        cf = box_censor(ctx.classifier, ctx.sample.image, mask, **ctx.shared)
        boxes = component_boxes(mask)
        seconds = time.perf_counter() - t + (base.seconds if base else 0.0)
        return Run(cf, [boxes_mask(mask.shape, [b]) for b in boxes], seconds, cf.queries + (base.queries if base else 0))

    return run


def configurations(tables: list[str], sam: str | None, lime_samples: int, sedc_queries: int) -> tuple[dict, dict]:
    """The methods to run (name -> runner, CSE's shared row once, boxes after CSE) and each table's rows."""
    methods: dict[str, Callable[[Context], Run]] = {CSE_KEY: cse_method("fullgrad", "bass"), HIDE_KEY: cse_method("fullgrad", "bass", mode="hide")}
    rows: dict[str, list[str]] = {}
    if "3" in tables:
        rows["3"] = [HIDE_KEY, *(CSE_KEY if a == "fullgrad" else f"cse {a} / bass" for a in ATTRIBUTIONS)]
        methods.update({f"cse {a} / bass": cse_method(a, "bass") for a in ATTRIBUTIONS[1:]})
    if "4" in tables:
        segs = list(SEGMENTATIONS) + (["sam"] if sam else [])
        rows["4"] = [HIDE_KEY, CSE_KEY, UNGUIDED_KEY, *(f"cse fullgrad / {s}" for s in segs[1:])]
        methods[UNGUIDED_KEY] = cse_method("fullgrad", "bass", {"attribution_weight": 0})
        methods.update({f"cse fullgrad / {s}": cse_method("fullgrad", s) for s in SEGMENTATIONS[1:]})
        if sam:
            methods["cse fullgrad / sam"] = cse_method("fullgrad", "sam", {"checkpoint": sam})
    if "methods" in tables:
        baselines = {
            **{csra_key(k): csra_method(k) for k in CSRA_ROIS},
            "sedc": quickshift_method(sedc, max_queries=sedc_queries),
            "lime": quickshift_method(lime_counterfactual, num_samples=lime_samples),
            "boxes of cse regions": boxes_method("cse"),
            "boxes of true stand-ins": boxes_method("truth"),
        }
        rows["methods"] = [HIDE_KEY, CSE_KEY, *baselines]
        methods.update(baselines)
    return methods, rows


def score(ctx: Context, run: Run) -> dict:
    """One image's figures for one method; the minimality check's queries are not charged to it."""
    cf, truth = run.cf, ctx.sample.mask
    shown = cf.found and cf.output is not None
    row = {
        "seed": ctx.sample.seed,
        "found": cf.found,
        "reported_safe": bool(cf.found),  # what the method would hand a person as safe
        "depth": cf.depth,
        "greedy_depth": cf.greedy_depth,
        "queries": run.queries,
        "seconds": run.seconds,
        "obfuscated": float(cf.mask.mean()),
        "truth": float(truth.mean()),
        **leakage(cf.mask, truth, ctx.sample.image, cf.output if shown else None),
        "minimal": None,
        "pruned_depth": None,
    }
    if shown:
        row["minimal"], kept = prune(ctx, run)
        row["pruned_depth"] = len(kept)
    return row


def prune(ctx: Context, run: Run) -> tuple[bool, list[int]]:
    """The method's chosen regions pruned as CSE's ``minimal`` mode prunes: drop one region at a
    time, the last chosen first, while the output (those regions obfuscated) still flips; repeat
    until none can go. Returns whether the chosen set was already 1-minimal (no single region could
    be dropped; one region always is, since dropping it leaves the flagged original) and the
    indices kept. A measurement: its queries are not charged to the method."""
    masks = run.region_masks
    kept = list(range(len(masks)))
    minimal = True
    while len(kept) > 1:
        candidates = [[j for j in kept if j != drop] for drop in reversed(kept)]
        outputs = []
        for c in candidates:
            rest = np.zeros(ctx.sample.mask.shape, bool)
            for j in c:
                rest |= masks[j]
            outputs.append(ctx.obfuscator(ctx.sample.image, rest))
        flips = np.asarray(ctx.flip(ctx.classifier(np.stack(outputs))), bool)
        if not flips.any():
            break
        minimal = False
        kept = candidates[int(np.argmax(flips))]
    return minimal, kept


def summarise(rows: list[dict]) -> dict:
    flagged = [r for r in rows if r["flagged"]]
    found = [r for r in flagged if r["found"]]
    minimal = [r["minimal"] for r in found if r["minimal"] is not None]
    pct = lambda key, rs: _mean([100 * r[key] for r in rs if r[key] is not None])  # noqa: E731
    return {
        "images": len(rows),
        "flagged_pct": 100.0 * len(flagged) / max(1, len(rows)),
        "found_pct": 100.0 * len(found) / len(flagged) if flagged else None,
        "flagged": len(flagged),
        "depth": _mean([r["depth"] for r in found]),
        "greedy_depth": _mean([r["greedy_depth"] for r in found]),
        "pruned_depth": _mean([r["pruned_depth"] for r in found if r.get("pruned_depth") is not None]),
        "obfuscated_pct": pct("obfuscated", found),
        "truth_pct": pct("truth", found),
        "iou": _mean([r["iou"] for r in found]),
        "precision": _mean([r["precision"] for r in found]),
        "recall": _mean([r["recall"] for r in found]),
        "safe_identical_pct": pct("safe_identical", found),
        **summarise_leakage(flagged),
        "minimal_pct": 100.0 * sum(minimal) / len(minimal) if minimal else None,
        "queries": _mean([r["queries"] for r in flagged]),
        "seconds": _mean([r["seconds"] for r in flagged]),
    }


COLUMNS = (
    ("images", "images", "d"),
    ("flagged", "flagged", "d"),
    ("flagged %", "flagged_pct", ".1f"),
    ("found %", "found_pct", ".1f"),
    ("greedy depth", "greedy_depth", ".2f"),
    ("pruned depth", "pruned_depth", ".2f"),
    ("final depth", "depth", ".2f"),
    ("obfuscated % (truth %)", None, None),
    ("IoU", "iou", ".3f"),
    ("precision", "precision", ".3f"),
    ("recall", "recall", ".3f"),
    ("recall median (p10)", "recall_quantiles", None),
    ("leak rate %", "leak_rate_pct", ".1f"),
    ("area ratio median", "area_ratio_median", ".2f"),
    ("safe px identical %", "safe_identical_pct", ".2f"),
    ("1-minimal %", "minimal_pct", ".1f"),
    ("queries", "queries", ".1f"),
    ("s/image", "seconds", ".3f"),
)


def _groups(categories: list[str]) -> list[str]:
    """The categories, then their pooled summary when there are several."""
    return [*categories, "all"] if len(categories) > 1 else list(categories)


def _cell(s: dict, key: str | None, spec: str | None) -> str:
    if key is None:
        return f"{fmt(s['obfuscated_pct'])} ({fmt(s['truth_pct'])})"
    if key == "recall_quantiles":
        return f"{fmt(s['recall_median'], '.3f')} ({fmt(s['recall_p10'], '.3f')})"
    if key == "leak_rate_pct":
        return fmt(None if s["leak_rate"] is None else 100 * s["leak_rate"], spec)
    return fmt(s[key], spec)


def same_images(names: list[str], per_image: dict, categories: list[str], limit: int | None = None) -> dict[str, int]:
    """Check that every method in ``names`` was scored on the same images, flagged alike, in each
    category (the first ``limit`` rows); return the flagged count per category."""
    counts = {}
    for category in categories:
        keys = {name: [(r["seed"], r["flagged"]) for r in per_image[name][category][:limit]] for name in names}
        first = keys[names[0]]
        differ = [name for name in names if keys[name] != first]
        if differ:
            raise RuntimeError(f"{category}: {differ} were not scored on the same images as {names[0]!r}")
        counts[category] = sum(flagged for _, flagged in first)
    return counts


def summarise_all(per_image: dict, names: list[str], categories: list[str], limit: int | None = None) -> dict:
    """Each method's summary per category and pooled ("all"), over the first ``limit`` images."""
    return {
        name: {**{c: summarise(per_image[name][c][:limit]) for c in categories},
               "all": summarise([r for c in categories for r in per_image[name][c][:limit]])}
        for name in names
    }


def markdown(table: str, names: list[str], summaries: dict, categories: list[str], note: str = "") -> str:
    head = "| category | method | " + " | ".join(c[0] for c in COLUMNS) + " |\n"
    lines = [f"## {TITLES[table]}\n", *([note + "\n"] if note else []), head + "|---|---|" + "---:|" * len(COLUMNS)]
    for category in _groups(categories):
        for name in names:
            s = summaries[name][category]
            cells = [_cell(s, key, spec) for _, key, spec in COLUMNS]
            lines.append(f"| {category} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: str, names: list[str], summaries: dict, categories: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("found %", lambda s: s["found_pct"]),
        ("obfuscated %", lambda s: s["obfuscated_pct"]),
        ("IoU with the truth", lambda s: s["iou"]),
        ("safe pixels altered %", lambda s: None if s["safe_identical_pct"] is None else 100 - s["safe_identical_pct"]),
    )
    groups = _groups(categories)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    width = 0.8 / len(names)
    for ax, (title, value) in zip(axes, panels):
        for i, name in enumerate(names):
            values = [value(summaries[name][g]) or 0.0 for g in groups]
            ax.bar(np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width, values, width, label=name)
        ax.set_title(title)
        ax.set_xticks(np.arange(len(groups)), groups, rotation=20)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=8)
    fig.suptitle(TITLES[table])
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_shard(args: argparse.Namespace, shard: int, jobs: int) -> tuple[dict, list[float]]:
    """Run every method on the images of ``shard`` (those whose index i has i % jobs == shard) in
    every category; rows carry their index so that :func:`merge_shards` restores the run's order.
    Returns the rows (method -> category -> rows) and the 1-minute load average sampled after every
    method and category."""
    set_threads(args.threads)
    categories = args.categories.split(",")
    methods, _ = configurations([t for t in args.tables.split(",") if t], args.sam, args.lime_samples, args.sedc_queries)
    obfuscator = Obfuscator(args.style)
    per_image: dict[str, dict[str, list[dict]]] = {name: {} for name in methods}
    warmed: set[str] = set()
    loads = [os.getloadavg()[0]]
    t_start = time.perf_counter()
    tag = f"[{shard + 1}/{jobs}] " if jobs > 1 else ""
    for category in categories:
        classifier = load_classifier(args.model.format(category=category))
        unsafe = classifier.unsafe_indices
        flip = lambda probs: 1.0 - np.asarray(probs)[:, unsafe].sum(axis=1) > 0.5  # noqa: E731 (the pipeline's rule)
        # a category's images depend on its own index, not on which categories run with it
        first_seed = args.seed * 1_000_000 + CATEGORIES.index(category) * 100_000
        indices = list(range(shard, args.n, jobs))
        samples = [make_sample(category, True, seed=first_seed + i, size=args.size) for i in indices]
        contexts: list[Context | None] = []
        for sample in samples:
            probs = classifier(sample.image[None])[0]
            flagged = not flip(probs[None])[0]
            target = unsafe[int(np.argmax(probs[unsafe]))]
            contexts.append(Context(classifier, sample, target, flip, obfuscator) if flagged else None)
        for name, method in methods.items():
            if name not in warmed and any(contexts):  # lazy imports and numba compilation stay out of the timings
                first = next(ctx for ctx in contexts if ctx)
                method(Context(first.classifier, first.sample, first.target, first.flip, first.obfuscator, dict(first.done)))
                warmed.add(name)
            rows = []
            limit = args.slow_n if name in SLOW_METHODS and args.slow_n is not None else args.n
            for index, sample, ctx in zip(indices, samples, contexts):
                if index >= limit:
                    break
                if ctx is None:
                    rows.append({"index": index, "seed": sample.seed, "flagged": False})
                    continue
                run = method(ctx)
                ctx.done[name] = run
                rows.append({"index": index, "flagged": True, **score(ctx, run)})
            per_image[name][category] = rows
            s = summarise(rows)
            loads.append(os.getloadavg()[0])
            print(f"{tag}{category:14s} {name:26s} found {fmt(s['found_pct'])}%  IoU {fmt(s['iou'], '.3f')}  "
                  f"{fmt(s['seconds'], '.3f')} s/image  ({time.perf_counter() - t_start:.0f} s, load {loads[-1]:.2f})", flush=True)
    return per_image, loads


def merge_shards(shards: list[dict]) -> dict:
    """The shards' rows joined per method and category, in image order (as one process would
    have written them)."""
    merged: dict[str, dict[str, list[dict]]] = {}
    for shard in shards:
        for name, by_category in shard.items():
            for category, rows in by_category.items():
                merged.setdefault(name, {}).setdefault(category, []).extend(rows)
    for by_category in merged.values():
        for rows in by_category.values():
            rows.sort(key=lambda r: r["index"])
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="unsafe images per category")
    parser.add_argument("--seed", type=int, default=1, help="held-out benchmark seed (the demo models trained on 0)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated: 3, 4, methods")
    parser.add_argument("--model", default="demo-{category}", help="classifier name or checkpoint path; {category} is filled in")
    parser.add_argument("--sam", default=None, help="local SAM checkpoint directory (transformers SamModel + SamProcessor); "
                        "Table 4 gets a SAM row, segment(image, 'sam', checkpoint=SAM); without it Table 4 has no SAM row")
    parser.add_argument("--style", default="blur", help="obfuscation style, the same for every method")
    parser.add_argument("--lime-samples", type=int, default=1000)
    parser.add_argument("--sedc-queries", type=int, default=2000, help="SEDC's query budget per image")
    parser.add_argument("--slow-n", type=int, default=None,
                        help="run SEDC and LIME (1,000+ queries each) on only the first N images per category")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes, each running every method on every JOBS-th image (--jobs 2 --threads 1 fills two cores); "
                             "the tables are the same as one process's, only the times differ")
    parser.add_argument("--out", type=Path, default=Path("bench/results/reproduce"))
    args = parser.parse_args()
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    categories = args.categories.split(",")
    tables = [t for t in args.tables.split(",") if t]
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        parser.error(f"unknown table(s) {unknown}; choose from {', '.join(TABLES)}")
    if "4" in tables and not args.sam:
        print("Table 4: no --sam checkpoint given, so no SAM row.", flush=True)
    if args.sam:
        if "4" not in tables:
            print("--sam is used by Table 4 only, which is not selected.", flush=True)
        else:  # a bad checkpoint is one line now, not a traceback after the other methods ran
            from safeview.errors import SafeViewError
            from safeview.segment.sam import load_sam

            try:
                load_sam(args.sam)
            except SafeViewError as exc:
                parser.error(str(exc))
    _, table_rows = configurations(tables, args.sam, args.lime_samples, args.sedc_queries)
    t_start = time.perf_counter()
    if args.jobs == 1:
        shards = [run_shard(args, 0, 1)]
    else:  # spawn: a forked child would inherit torch's thread pools mid-state
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            shards = list(pool.map(run_shard, [args] * args.jobs, range(args.jobs), [args.jobs] * args.jobs))
    per_image = merge_shards([rows for rows, _ in shards])
    loads = [load for _, shard_loads in shards for load in shard_loads] + [os.getloadavg()[0]]

    summaries = summarise_all(per_image, list(per_image), categories)
    table_summaries = {table: summaries for table in table_rows}
    limits: dict[str, int] = {table: args.n for table in table_rows}
    if "methods" in table_rows and args.slow_n is not None and args.slow_n < args.n:
        # SEDC and LIME ran on the first --slow-n images only: the full table leaves them out, and
        # every method is also scored on exactly those images
        table_rows[SAME_KEY] = list(table_rows["methods"])
        table_rows["methods"] = [m for m in table_rows["methods"] if m not in SLOW_METHODS]
        table_summaries[SAME_KEY] = summarise_all(per_image, table_rows[SAME_KEY], categories, args.slow_n)
        limits[SAME_KEY] = args.slow_n
    notes = {}
    for table, names in table_rows.items():
        flagged = same_images(names, per_image, categories, limits[table])
        notes[table] = (f"Every row scored on the same {limits[table]} images per category, of which flagged (and searched): "
                        + ", ".join(f"{c} {k}" for c, k in flagged.items()) + ".")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "n_per_category": args.n, "seed": args.seed, "size": args.size, "style": args.style, "model": args.model,
        "categories": categories, "tables": tables, "sam": args.sam, "lime_samples": args.lime_samples,
        "sedc_queries": args.sedc_queries, "slow_n": args.slow_n, "csra_num_roi": list(CSRA_ROIS), "threads": args.threads, "jobs": args.jobs,
        "torch": torch.__version__,
        "load_1min_min_median_max": [min(loads), float(np.median(loads)), max(loads)], "load_average_at_end": list(os.getloadavg()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "wall_seconds": time.perf_counter() - t_start,
    }
    report = [f"# CSE reproduction and baselines\n\nCommand: `python bench/reproduce.py {' '.join(sys.argv[1:])}`\n\n"
              f"{meta['machine']}, {args.jobs} process(es) of {args.threads} thread(s), {meta['wall_seconds'] / 60:.1f} min wall; 1-minute load average "
              f"{min(loads):.2f}-{max(loads):.2f} (median {np.median(loads):.2f}) during the run.\n"]
    for table, names in table_rows.items():
        report.append(markdown(table, names, table_summaries[table], categories, notes[table]))
        plot(table, names, table_summaries[table], categories, args.out / f"table_{table.replace(', ', '_').replace(' ', '_')}.png")
    (args.out / "tables.md").write_text("\n".join(report))
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "tables": table_rows, "summaries": summaries,
                    "summaries_same_images": table_summaries.get(SAME_KEY), "images": per_image}, indent=1) + "\n"
    )
    print("\n".join(report))


if __name__ == "__main__":
    main()
