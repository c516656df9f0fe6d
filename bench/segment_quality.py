"""Region quality against the synthetic benchmark's exact stand-in masks: boundary recall,
undersegmentation error and achievable segmentation accuracy for BASS (with and without the
demo model's FullGrad attribution), SLIC, Felzenszwalb and compact watershed — at the paper's
settings and, for SLIC, at the region count BASS + attribution reached on the same image.

    .venv/bin/python bench/segment_quality.py --n 60 --out bench/results/segment_quality.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import achievable_segmentation_accuracy, boundary_recall, emit, undersegmentation_error  # noqa: E402

from safeview.attribute import attribution_map  # noqa: E402
from safeview.classify import load_classifier  # noqa: E402
from safeview.counterfactual import cse_segmentation_params  # noqa: E402
from safeview.segment import segment  # noqa: E402
from safeview.synth import CATEGORIES, make_sample  # noqa: E402
from safeview.threads import set_threads  # noqa: E402


def methods(image: np.ndarray, attribution: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """Every segmentation of one image, with its seconds."""
    out: dict[str, tuple[np.ndarray, float]] = {}

    def run(name: str, method: str, att: np.ndarray | None, **params) -> None:
        t = time.perf_counter()
        out[name] = (segment(image, method, attribution=att, **params), time.perf_counter() - t)

    bass_params = cse_segmentation_params("bass", image.shape[:2], {})
    run("BASS + attribution", "bass", attribution, **bass_params)
    run("BASS", "bass", None, **bass_params)
    run("SLIC (paper: 25, c=1)", "slic", None)
    run("SLIC (BASS's count, c=10)", "slic", None, n_segments=int(out["BASS + attribution"][0].max()) + 1, compactness=10)
    run("Felzenszwalb (paper)", "felzenszwalb", None)
    run("watershed (paper)", "watershed", None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="unsafe images in total, split across categories")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    rows: dict[str, list[tuple[int, float, float, float, float]]] = {}
    per = args.n // len(CATEGORIES)
    for ci, category in enumerate(CATEGORIES):
        clf = load_classifier(f"demo-{category}")
        target = clf.unsafe_indices[0]
        for i in range(per):
            sample = make_sample(category, True, seed=args.seed * 1_000_000 + ci * per + i, size=args.size)
            attribution = attribution_map(clf, sample.image, target)
            gt = sample.mask.astype(np.int32)
            for name, (labels, seconds) in methods(sample.image, attribution).items():
                rows.setdefault(name, []).append(
                    (
                        int(labels.max()) + 1,
                        boundary_recall(labels, gt),
                        undersegmentation_error(labels, gt),
                        achievable_segmentation_accuracy(labels, gt),
                        seconds,
                    )
                )
    lines = [
        "| method | regions | boundary recall ↑ | undersegmentation error ↓ | achievable seg. accuracy ↑ | ms/image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in rows.items():
        k, br, ue, asa, sec = (statistics.fmean(v) for v in zip(*values))
        lines.append(f"| {name} | {k:.1f} | {br:.3f} | {ue:.4f} | {asa:.4f} | {1000 * sec:.0f} |")
    text = (
        f"Command: `{' '.join(['.venv/bin/python', 'bench/segment_quality.py', *sys.argv[1:]])}` — "
        f"{per * len(CATEGORIES)} unsafe images ({per} per category, seed {args.seed}, {args.size}²), ground truth: "
        "the stand-in mask against the rest; attribution: the demo model's FullGrad; torch threads "
        f"{args.threads}.\n\n" + "\n".join(lines) + "\n"
    )
    emit(text, args.out)


if __name__ == "__main__":
    main()
