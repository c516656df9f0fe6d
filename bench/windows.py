"""How often a model still flags a stand-in once the image is made longer with benign padding, when
it classifies the whole image (squashed into its square input) and when it also classifies the
image's windows (safeview.windows): the measurement behind ``WINDOW_ASPECT``. Then the same for a
stand-in as one cell of a square collage of benign photos, whole and with ``--tiles``, and what
tiles cost: how often they flag a benign photo the whole image does not.

For each demo model, held-out benign photos with a drawn stand-in (``make_sample(category, True,
seed)``, seeds from 7000000) that the model flags at 224², each widened to every aspect ratio with
another benign photo (``make_background``) beside it, centred on flat canvases, and placed as the
first cell of 2×2, 3×3 and 4×4 collages of other benign photos; and the model's benign samples
(``make_sample(category, False, seed)``, the same seeds) at 448² and on a canvas.

    python bench/windows.py --seeds 40 --out bench/results/windows.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ASPECTS = (1.34, 1.5, 1.78, 2.0, 3.0, 5.0)
GRIDS = (2, 3, 4)
#: (side multiple, grey level) of the flat canvases a 224² image is centred on
CANVASES = ((2, 255), (3, 255), (3, 0), (3, 127))


def framed_canvas(image: np.ndarray, scale: int, colour: int) -> np.ndarray:
    """``image`` centred on a flat square canvas ``scale`` times its side."""
    side = image.shape[0] * scale
    canvas = np.full((side, side, 3), colour, np.uint8)
    at = (side - image.shape[0]) // 2
    canvas[at : at + image.shape[0], at : at + image.shape[1]] = image
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=40, help="seeds tried per model (only flagged ones count)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from safeview.classify import load_model_set
    from safeview.synth import make_background, make_sample
    from safeview.windows import WINDOW_ASPECT, Windowed, tile_boxes, window_boxes

    def unsafe(model, image: np.ndarray) -> bool:
        return bool(model.unsafe_probability(model.predict_proba(image[None]))[0] > 0.5)

    flagged = 0
    whole = dict.fromkeys(ASPECTS, 0)
    windowed = dict.fromkeys(ASPECTS, 0)
    cells = {g: [0, 0] for g in GRIDS}  # flagged whole, flagged with tiles
    canvases = {key: [0, 0] for key in CANVASES}  # flagged whole, flagged with the default views (the content box)
    framed_benign = [0, 0, 0]  # benign photos on a canvas: count, flagged whole, flagged with the default views
    benign: dict[str, list[int]] = {}  # model -> [photos, flagged whole, flagged with tiles]
    for clf in load_model_set("demo"):
        tiled = Windowed(clf, tiles=True)
        counts = benign.setdefault(clf.name, [0, 0, 0])
        for seed in range(7_000_000, 7_000_000 + args.seeds):
            photo = make_sample(clf.category, False, seed=seed, size=448).image
            counts[0] += 1
            counts[1] += unsafe(clf, photo)
            counts[2] += unsafe(tiled, photo)
            small = make_sample(clf.category, False, seed=seed, size=224).image
            framed = framed_canvas(small, *CANVASES[0])
            framed_benign[0] += 1
            framed_benign[1] += unsafe(clf, framed)
            framed_benign[2] += unsafe(Windowed(clf), framed)
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
            for key in CANVASES:
                framed = framed_canvas(image, *key)
                canvases[key][0] += unsafe(clf, framed)
                canvases[key][1] += unsafe(Windowed(clf), framed)
            others = [make_background(seed=seed + 1 + k, size=224) for k in range(max(GRIDS) ** 2 - 1)]
            for g in GRIDS:
                parts = [image, *others[: g * g - 1]]
                grid = np.concatenate([np.concatenate(parts[r * g : (r + 1) * g], axis=1) for r in range(g)], axis=0)
                cells[g][0] += unsafe(clf, grid)
                cells[g][1] += unsafe(tiled, grid)
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
    lines += [
        "",
        "## The stand-in centred on a flat canvas (the content box inside uniform borders is a default view)",
        "",
        "| canvas | flagged, whole image | flagged, whole and content box |",
        "|---|---:|---:|",
    ]
    for (scale, colour), (plain, boxed) in canvases.items():
        lines.append(f"| {scale}× the side, grey {colour} | {plain}/{flagged} ({100 * plain / flagged:.0f} %) | {boxed}/{flagged} ({100 * boxed / flagged:.0f} %) |")
    photos, plain, boxed = framed_benign
    lines += ["", f"Benign samples (224²) on a {CANVASES[0][0]}× canvas of grey {CANVASES[0][1]}, flagged: whole {plain}/{photos}, "
              f"whole and content box {boxed}/{photos}."]
    lines += [
        "",
        "## The stand-in as one cell of a square collage of benign photos (each cell 224², the stand-in's the first)",
        "",
        "| collage | tiles | flagged, whole image | flagged, whole and tiles (`--tiles`) |",
        "|---:|---:|---:|---:|",
    ]
    for g, (plain, tiles) in cells.items():
        n = len(tile_boxes((224 * g, 224 * g)))
        lines.append(f"| {g}×{g} | {n} | {plain}/{flagged} ({100 * plain / flagged:.0f} %) | {tiles}/{flagged} ({100 * tiles / flagged:.0f} %) |")
    lines += [
        "",
        "## What tiles cost: benign samples at 448² flagged",
        "",
        "| model | benign photos | flagged, whole image | flagged, whole and tiles |",
        "|---|---:|---:|---:|",
    ]
    for name, (photos, plain, tiles) in benign.items():
        lines.append(f"| {name} | {photos} | {plain} ({100 * plain / photos:.0f} %) | {tiles} ({100 * tiles / photos:.0f} %) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
