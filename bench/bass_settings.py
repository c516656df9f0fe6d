"""Which BASS settings suit CSE: found %, region count and obfuscated area per setting, plus two
diagnostics that say why a search fails — does blurring the whole true stand-in flip the model
("truth flips"), and does blurring the BASS regions lying mostly inside it ("oracle flips")?

Each category's demo model scans its own held-out stand-ins (seeds 1000…); CSE is FullGrad, BASS
with the pipeline's cell side plus the given parameters, Def. 1 order, the greedy search (≤ 10
regions, pruned), blur. This is the script behind "Choosing BASS's settings for CSE" in
bench/README.md.

    .venv/bin/python bench/bass_settings.py --n 40 --settings 'i_std=0.018' 'i_std=0.05' 'i_std=0.05+attribution_weight=0'
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cse import parse_method  # noqa: E402

from safeview.attribute import attribution_map  # noqa: E402
from safeview.classify import load_classifier  # noqa: E402
from safeview.counterfactual import greedy_search, rank_regions, region_scores  # noqa: E402
from safeview.obfuscate import Obfuscator  # noqa: E402
from safeview.counterfactual import cse_segmentation_params  # noqa: E402
from safeview.segment import segment  # noqa: E402
from safeview.synth import CATEGORIES, make_sample  # noqa: E402
from safeview.threads import set_threads  # noqa: E402


def run(category: str, n: int, params: dict, obfuscator: Obfuscator) -> dict:
    clf = load_classifier(f"demo-{category}")
    unsafe = clf.unsafe_indices

    def flip(probs):
        return 1.0 - np.asarray(probs)[:, unsafe].sum(axis=1) > 0.5

    rows, start = [], time.perf_counter()
    for seed in range(1000, 1000 + n):
        sample = make_sample(category, True, seed=seed, size=256)
        probs = clf.predict_proba(sample.image[None])[0]
        if probs[unsafe].sum() < 0.5:
            continue  # not flagged: no search
        target = unsafe[int(np.argmax(probs[unsafe]))]
        attribution = attribution_map(clf, sample.image, target)
        labels = segment(sample.image, "bass", attribution=attribution, **cse_segmentation_params("bass", (256, 256), params))
        cf = greedy_search(
            clf, sample.image, labels, rank_regions(region_scores(attribution, labels)), source_class=target,
            obfuscator=obfuscator, flip_rule=flip, original_probabilities=probs,
        )
        k = int(labels.max()) + 1
        inside = np.bincount(labels.ravel(), weights=sample.mask.ravel(), minlength=k) / np.bincount(labels.ravel(), minlength=k)
        oracle = (inside > 0.5)[labels]
        rows.append({
            "found": cf.found, "regions": k,
            "area": float(cf.mask.mean()), "truth": float(sample.mask.mean()),
            "truth_flips": bool(flip(clf.predict_proba(obfuscator(sample.image, sample.mask)[None]))[0]),
            "oracle_flips": bool(oracle.any() and flip(clf.predict_proba(obfuscator(sample.image, oracle)[None]))[0]),
        })
    found = [r for r in rows if r["found"]]
    mean = lambda key, rs: float(np.mean([r[key] for r in rs])) if rs else float("nan")  # noqa: E731
    return {
        "flagged": len(rows), "found_pct": 100 * len(found) / max(1, len(rows)), "regions": mean("regions", rows),
        "area_pct": 100 * mean("area", found), "truth_pct": 100 * mean("truth", found),
        "truth_flips_pct": 100 * mean("truth_flips", rows), "oracle_flips_pct": 100 * mean("oracle_flips", rows),
        "s_per_image": (time.perf_counter() - start) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="stand-ins per category")
    parser.add_argument("--settings", nargs="+", default=["i_std=0.018", "i_std=0.03", "i_std=0.05", "i_std=0.08", "i_std=0.05+attribution_weight=0"])
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    obfuscator = Obfuscator("blur")
    print("| BASS setting | category | flagged | found % | regions | obfuscated % (truth %) | truth flips % | oracle flips % | s/image |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|")
    for setting in args.settings:
        _, params = parse_method(f"bass:{setting}")
        for category in args.categories.split(","):
            r = run(category, args.n, params, obfuscator)
            print(f"| {setting} | {category} | {r['flagged']} | {r['found_pct']:.0f} | {r['regions']:.1f} | {r['area_pct']:.1f} "
                  f"({r['truth_pct']:.1f}) | {r['truth_flips_pct']:.0f} | {r['oracle_flips_pct']:.0f} | {r['s_per_image']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
