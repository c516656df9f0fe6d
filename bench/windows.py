"""How often a model still flags a stand-in once the image is made longer with benign padding, when
it classifies the whole image (squashed into its square input) and when it also classifies the
image's windows (safeview.windows): the measurement behind ``WINDOW_ASPECT``.

For each demo model, held-out benign photos with a drawn stand-in (``make_sample(category, True,
seed)``, seeds from 7000000) that the model flags at 224², each widened to every aspect ratio with
another benign photo (``make_background``) beside it.

    python bench/windows.py --seeds 40 --out bench/results/windows.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ASPECTS = (1.34, 1.5, 1.78, 2.0, 3.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=40, help="seeds tried per model (only flagged ones count)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from safeview.classify import load_model_set
    from safeview.synth import make_background, make_sample
    from safeview.windows import WINDOW_ASPECT, Windowed, window_boxes

    flagged = 0
    whole = dict.fromkeys(ASPECTS, 0)
    windowed = dict.fromkeys(ASPECTS, 0)
    for clf in load_model_set("demo"):
        for seed in range(7_000_000, 7_000_000 + args.seeds):
            image = make_sample(clf.category, True, seed=seed, size=224).image
            if clf.unsafe_probability(clf.predict_proba(image[None]))[0] <= 0.5:
                continue
            flagged += 1
            padding = make_background(seed=seed + 1, size=224)
            for aspect in ASPECTS:
                copies = int(np.ceil(aspect))
                wide = np.concatenate([image, *[padding] * copies], axis=1)[:, : round(224 * aspect)]
                whole[aspect] += int(clf.unsafe_probability(clf.predict_proba(wide[None]))[0] > 0.5)
                windowed[aspect] += int(clf.unsafe_probability(Windowed(clf).predict_proba(wide[None]))[0] > 0.5)
    lines = [
        "# A stand-in still flagged once the image is widened with a benign photo",
        "",
        f"Command: `python bench/windows.py --seeds {args.seeds}`; demo models, {flagged} stand-ins flagged at 224². "
        f"Windows from {WINDOW_ASPECT}:1 (safeview.windows.WINDOW_ASPECT).",
        "",
        "| aspect | windows | flagged, whole image | flagged, whole and windows |",
        "|---:|---:|---:|---:|",
    ]
    for aspect in ASPECTS:
        n = len(window_boxes((224, round(224 * aspect))))
        lines.append(f"| {aspect:g}:1 | {n} | {whole[aspect]}/{flagged} ({100 * whole[aspect] / flagged:.0f} %) "
                     f"| {windowed[aspect]}/{flagged} ({100 * windowed[aspect] / flagged:.0f} %) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
