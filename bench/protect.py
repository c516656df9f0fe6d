"""Protected regions on the synthetic benchmark (issue 16): does the evidence next to the content
stay visible, and does hiding the content still work?

    .venv/bin/python bench/protect.py --n 60 --seed 91 --out bench/results/protect.json

Each case is a synthetic stand-in image (``safeview.synth``, exact ground truth) with an identifier
pasted *beside* the first stand-in (touching its bounding box, never covering a content pixel) or
*over* it (its box overlaps the stand-in; the content stays on top): a drawn face-like identifier,
or a real face cropped from scikit-image's bundled photos (the astronaut, the cameraman). The
identifier's box is the protected region. Each category's demo model scans its own images; only
flagged ones count, and every method is scored on the same images:

* ``safeview`` — ``Safeguard`` in ``hide`` mode with the box protected;
* ``safeview, no protection`` — the same without it (what protection saves);
* ``box censor (perfect detector)`` — the ground truth's component boxes blacked out, as
  NudeNet's ``censor()`` paints its detections when the detector is perfect;
* ``box censor, faces too`` — the same plus the identifier's box, as ``censor()`` does with every
  detection NudeNet returns, faces included.

Reported per placement: *kept*, the share of protected pixels left bit-identical (over every
flagged image, and over the outputs shown: SafeView's unverified outputs get the ``full``
fallback, which blurs the identifier too), and for the outputs each method would show (SafeView: verified; box censoring: always) the leakage figures of
:mod:`safeview.leakage`. For ``over`` cases kept is measured on the protected pixels that are not
content. Attribute detectors are off (they are measured in bench/attributes.py). Also measured:
*identifier alone*, the model's unsafe probability on the image with everything but the protected
box blurred (a model that answers to the identifier itself forces protection to give way), and the
face detector's recall on the bundled faces and its time per image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from safeview.baselines import boxes_mask, component_boxes
from safeview.classify import load_classifier
from safeview.faces import detect_faces
from safeview.leakage import leakage, summarise_leakage
from safeview.obfuscate import obfuscate
from safeview.pipeline import Safeguard
from safeview.synth import CATEGORIES, make_sample

METHODS = ("safeview", "safeview, no protection", "box censor (perfect detector)", "box censor, faces too")


def _real_faces() -> list[np.ndarray]:
    from skimage import data

    camera = data.camera()[60:200, 180:290]
    return [data.astronaut()[20:210, 140:320], np.repeat(camera[..., None], 3, axis=2)]


def _drawn_face(side: int, rng: np.random.Generator) -> np.ndarray:
    """A face-like identifier: a skin-toned oval with eyes, brows and a mouth on a plain tile."""
    import cv2

    tile = np.full((side, side, 3), rng.integers(170, 240, 3), np.uint8)
    skin = tuple(int(v) for v in rng.integers([180, 130, 100], [240, 190, 160]))
    c = side // 2
    cv2.ellipse(tile, (c, c), (int(side * 0.36), int(side * 0.46)), 0, 0, 360, skin, -1)
    for dx in (-1, 1):
        cv2.circle(tile, (c + dx * side // 6, int(side * 0.42)), max(2, side // 18), (40, 30, 30), -1)
        cv2.line(tile, (c + dx * side // 10, int(side * 0.33)), (c + dx * side // 4, int(side * 0.31)), (60, 40, 30), max(1, side // 40))
    cv2.ellipse(tile, (c, int(side * 0.66)), (side // 7, side // 16), 0, 0, 180, (150, 60, 60), max(1, side // 30))
    return tile


def make_case(category: str, seed: int, placement: str, size: int = 256):
    """A stand-in image with an identifier beside or over its first stand-in: (image, truth,
    protected box as [x0, y0, x1, y1], identifier kind), or None when it does not fit."""
    import cv2

    sample = make_sample(category, True, seed=seed, size=size)
    rng = np.random.default_rng([seed, 16, CATEGORIES.index(category)])
    x0, y0, x1, y1 = next(p.box for p in sample.placements if p.standin)
    side = int(np.clip(max(x1 - x0, y1 - y0) * rng.uniform(0.7, 1.1), 40, size // 3))
    kind = "drawn face" if seed % 2 else "real face"
    tile = _drawn_face(side, rng) if kind == "drawn face" else cv2.resize(
        _real_faces()[seed // 2 % 2], (side, side), interpolation=cv2.INTER_AREA)
    gap = int(rng.integers(0, 4))
    if placement == "beside":
        spots = [(x1 + gap, y0), (x0 - gap - side, y0), (x0, y1 + gap), (x0, y0 - gap - side)]
    else:  # overlapping about a third of the stand-in's box
        spots = [(x0 + (x1 - x0) * 2 // 3, y0), (x0 - side + (x1 - x0) // 3, y0)]
    for bx, by in spots:
        if bx < 0 or by < 0 or bx + side > size or by + side > size:
            continue
        box = np.zeros((size, size), bool)
        box[by:by + side, bx:bx + side] = True
        if placement == "beside" and (box & sample.mask).any():
            continue
        if placement == "over" and not (box & sample.mask).any():
            continue
        image = sample.image.copy()
        paste = box & ~sample.mask  # the content stays on top
        image[paste] = tile[paste[by:by + side, bx:bx + side]]
        return image, sample.mask, [bx, by, bx + side, by + side], kind
    return None


def _kept(image: np.ndarray, output: np.ndarray, pixels: np.ndarray) -> float:
    return float((output == image).all(axis=2)[pixels].mean()) if pixels.any() else 1.0


def run(n: int, seed: int) -> dict:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows: list[dict] = []
    for category in CATEGORIES:
        clf = load_classifier(f"demo-{category}")
        guards = {
            "safeview": Safeguard([clf], attributes=()),
            "safeview, no protection": Safeguard([clf], attributes=()),
        }
        for placement in ("beside", "over"):
            for i in range(n // len(CATEGORIES)):
                case = make_case(category, seed + i, placement)
                if case is None:
                    continue
                image, truth, box, kind = case
                if clf.unsafe_probability(clf.predict_proba(image[None]))[0] < 0.5:
                    continue  # not flagged: nothing to obfuscate
                protected = np.zeros(truth.shape, bool)
                protected[box[1]:box[3], box[0]:box[2]] = True
                measured = protected & ~truth
                alone = float(clf.unsafe_probability(clf.predict_proba(obfuscate(image, ~protected, "blur")[None]))[0])
                for method in METHODS:
                    t = time.perf_counter()
                    if method.startswith("safeview"):
                        result = guards[method].scan(image, protect=[{"box": box, "label": "face"}] if method == "safeview" else None)
                        mask = result.mask.to_mask() if result.mask else np.zeros(truth.shape, bool)
                        output = result.artifacts.obfuscated if result.artifacts.obfuscated is not None else image
                        shown = bool(result.obfuscated_safe)
                    else:
                        boxes = component_boxes(truth)
                        if method.endswith("faces too"):
                            boxes.append((box[1], box[0], box[3], box[2]))
                        mask = boxes_mask(truth.shape, boxes)
                        output = image.copy()
                        output[mask] = 0
                        shown = True
                    rows.append({
                        "category": category, "placement": placement, "identifier": kind, "seed": seed + i,
                        "method": method, "seconds": time.perf_counter() - t, "kept": _kept(image, output, measured),
                        "reported_safe": shown, "identifier_alone": alone, **leakage(mask, truth, image, output),
                    })
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    for placement in ("beside", "over"):
        for method in METHODS:
            group = [r for r in rows if r["placement"] == placement and r["method"] == method]
            if not group:
                continue
            kept = [r["kept"] for r in group]
            shown = [r["kept"] for r in group if r["reported_safe"]] or [float("nan")]
            out[f"{placement} / {method}"] = {
                "images": len(group),
                "reported_safe": sum(r["reported_safe"] for r in group),
                "kept_mean": statistics.fmean(kept),
                "kept_99": sum(k >= 0.99 for k in kept) / len(kept),
                "kept_shown_mean": statistics.fmean(shown),
                "kept_shown_min": min(shown),
                "kept_shown_99": sum(k >= 0.99 for k in shown) / len(shown),
                **{k: v for k, v in summarise_leakage(group).items() if k != "reported_safe"},
                "seconds_median": statistics.median(r["seconds"] for r in group),
                "identifier_alone_flagged": {c: sum(r["identifier_alone"] >= 0.5 for r in group if r["category"] == c)
                                             for c in CATEGORIES},
                "identifier_alone_max": {c: max((r["identifier_alone"] for r in group if r["category"] == c), default=None)
                                         for c in CATEGORIES},
            }
    return out


def face_detector() -> dict:
    """Recall on the faces scikit-image ships (the astronaut, the cameraman, 100 LFW crops framed
    at 64 px), false detections on its 100 LFW non-face crops, and time at 512²."""
    import cv2
    from skimage import data

    def framed(crop: np.ndarray) -> np.ndarray:
        grey = cv2.resize((crop * 255).astype(np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        return np.repeat(np.pad(grey, 16, mode="edge")[..., None], 3, axis=2)

    crops = data.lfw_subset()
    lfw = [bool(detect_faces(framed(c))) for c in crops[:100]]
    false = [bool(detect_faces(framed(c))) for c in crops[100:]]
    photos = {"astronaut": (data.astronaut(), (230, 110)), "camera": (np.repeat(data.camera()[..., None], 3, 2), (240, 130))}
    found = {name: any(f.mask[y, x] for f in detect_faces(image)) for name, (image, (x, y)) in photos.items()}
    image = data.astronaut()
    detect_faces(image)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        detect_faces(image)
        times.append(time.perf_counter() - t)
    return {"lfw_recall": sum(lfw) / len(lfw), "lfw_false_alarm_rate": sum(false) / len(false),
            "photos": found, "seconds_512": statistics.median(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="cases per placement, split across the categories")
    parser.add_argument("--seed", type=int, default=91)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    report = {"command": " ".join(["bench/protect.py", *(argv or sys.argv[1:])]), "load_average_start": load,
              "faces": face_detector(), **run(args.n, args.seed)}
    report["load_average_end"] = os.getloadavg()[0]
    print(json.dumps({k: report[k] for k in ("faces", "summary", "load_average_start", "load_average_end")}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
