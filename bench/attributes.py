"""How well the attribute detectors see text stand-ins, and whether an obfuscated word stays
readable (issue 17).

On benign backgrounds (``safeview.synth.make_background``) it draws one word per image: an insult
(the offensive stand-in) or a friendly word (the benign control), 12-40 px tall, at a random place
and angle, with its exact pixel mask. It then measures, on the same images for every row:

- OCR recall (overall, and below / from 20 px): the OCR reads the drawn word (case-insensitive, spaces ignored) in a box that covers
  at least half of its pixels;
- offensive recall on insults, and false alarms on friendly words and on the bare backgrounds;
- for each obfuscation style, after obfuscating exactly the word's pixels: how often the second
  opinion still fails the output (the OCR still reads an offensive word), i.e. an obfuscation that
  leaves text machine-readable; and the same after blurring the word's box grown by 2 %, as the
  pipeline does when the second opinion reads a word;
- the detectors' time per image at 224² and 1024²;
- inside the pipeline (:func:`pipeline_rows`), with and without the second opinion: outputs called
  safe in which the OCR still reads the insult, leak rate and obfuscated area.

Usage: ``python bench/attributes.py --images 40 --seed 0 [--out bench/results/attributes.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from safeview.attributes import detect, overlap, second_opinion  # noqa: E402
from safeview.obfuscate import STYLES, obfuscate  # noqa: E402
from safeview.synth import BENIGN_WORDS, make_background  # noqa: E402

#: mild insults, the offensive stand-ins (text only; no slurs)
INSULTS = ("LOSER", "IDIOT", "STUPID", "UGLY", "FREAK", "MORON", "DUMB", "PATHETIC")


def draw_word(image: np.ndarray, word: str, rng: np.random.Generator, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with ``word`` drawn, capitals ``height`` px tall (white on a dark outline or the
    reverse, level or turned by 12°), and its pixel mask."""
    h, w = image.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = height / cv2.getTextSize("H", font, 1.0, 1)[0][1]
    thickness = max(1, round(height / 9))
    (tw, th), _ = cv2.getTextSize(word, font, scale, thickness)
    if tw > w - 8:  # too wide for the image at this size: smaller, so the word is never cut off
        return draw_word(image, word, rng, max(8, int(height * (w - 8) / tw)))
    x = int(rng.integers(2, max(3, w - tw - 2)))
    y = int(rng.integers(th + 2, max(th + 3, h - 4)))
    outline, core = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    cv2.putText(outline, word, (x, y), font, scale, 255, thickness + 2 * max(1, thickness // 2), cv2.LINE_AA)
    cv2.putText(core, word, (x, y), font, scale, 255, thickness, cv2.LINE_AA)
    angle = float(rng.choice([0.0, 0.0, -12.0, 12.0]))
    if angle:
        rotation = cv2.getRotationMatrix2D((x + tw / 2, y - th / 2), angle, 1.0)
        outline, core = (cv2.warpAffine(m, rotation, (w, h)) for m in (outline, core))
    light, dark = (255, 255, 255), (20, 20, 20)
    fg, bg = (light, dark) if rng.random() < 0.7 else (dark, light)
    out = image.copy()
    out[outline > 127] = bg
    out[core > 127] = fg
    return out, outline > 127


def box_around(mask: np.ndarray) -> np.ndarray:
    """The bounding box of ``mask`` grown by 2 % of the shorter side: what the pipeline obfuscates
    when the second opinion still reads a word (``pipeline._attribute_area``)."""
    ys, xs = np.nonzero(mask)
    pad = max(1, round(0.02 * min(mask.shape)))
    out = np.zeros_like(mask)
    out[max(0, ys.min() - pad) : ys.max() + pad + 1, max(0, xs.min() - pad) : xs.max() + pad + 1] = True
    return out


def _reads(report, word: str, mask: np.ndarray) -> bool:
    want = word.replace(" ", "").upper()
    return any(
        want in (a.text or "").replace(" ", "").upper() and overlap(mask, a.area(mask.shape)) >= 0.5
        for a in report.named("text")
    )


def pipeline_rows(n: int, seed: int, size: int) -> dict[str, dict]:
    """The second opinion inside the pipeline, on the same ``n`` images for both rows: each holds a
    red square that the classifier (the tests' ``RedDetector``, which sees only red) flags, and an
    insult it does not see, both with exact masks. ``Safeguard`` runs once with the attribute
    detectors and once without (``attributes=()``); per row: outputs called safe, those in which
    the OCR still reads the insult, the leak rate (a stand-in, square or word, less than 80 %
    covered), and the obfuscated area against the truth's."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from scenes import RedDetector

    from safeview.pipeline import Safeguard

    rng = np.random.default_rng([seed, 17])
    scenes = []
    for i in range(n):
        image = make_background(seed=seed * 100_003 + 50_000 + i, size=size)
        word = str(rng.choice(INSULTS))
        image, word_mask = draw_word(image, word, rng, int(rng.integers(20, 37)))
        side = int(rng.integers(24, 49))
        y, x = (int(v) for v in rng.integers(0, size - side, 2))
        square = np.zeros(word_mask.shape, bool)
        square[y : y + side, x : x + side] = True
        square &= ~word_mask  # the square is drawn under the word
        image[square] = (255, 0, 0)
        scenes.append((image, word, word_mask, square))
    classifier = RedDetector.build()
    rows = {}
    for name, attributes in (("with second opinion", ("ocr", "offensive")), ("classifier only", ())):
        guard = Safeguard([classifier], segmentation="bass", attributes=attributes)
        safe = readable = leaks = instances = 0
        ratios, seconds = [], []
        for image, word, word_mask, square in scenes:
            t = time.perf_counter()
            result = guard.scan(image)
            seconds.append(time.perf_counter() - t)
            mask = result.mask.to_mask() if result.mask else np.zeros(word_mask.shape, bool)
            for truth in (square, word_mask):
                instances += 1
                leaks += overlap(truth, mask) < 0.8
            ratios.append(mask.sum() / (square | word_mask).sum())
            if result.obfuscated_safe:
                safe += 1
                readable += _reads(detect(result.artifacts.obfuscated), word, word_mask)
        rows[name] = {
            "images": n, "called_safe": safe, "called_safe_with_the_insult_readable": readable,
            "leak_rate": leaks / instances, "area_ratio_median": float(np.median(ratios)),
            "seconds_median": float(np.median(seconds)),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40, help="images per kind (insult, friendly word)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipeline-images", type=int, default=20, help="images of the pipeline comparison (0: skip it)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    counts = {"insult": {"n": 0, "ocr": 0, "offensive": 0}, "friendly": {"n": 0, "ocr": 0, "offensive": 0},
              "background": {"n": 0, "offensive": 0, "any_text": 0}}
    by_height: dict[str, list[int]] = {"<20": [], ">=20": []}  # OCR reads the word, per drawn size
    still_failed = {style: 0 for style in (*STYLES, "blur, box + 2 %")}
    seconds: list[float] = []
    for i in range(args.images):
        background = make_background(seed=args.seed * 100_003 + i, size=args.size)
        t = time.perf_counter()
        bare = detect(background)
        seconds.append(time.perf_counter() - t)
        counts["background"]["n"] += 1
        counts["background"]["offensive"] += bool(bare.unsafe)
        counts["background"]["any_text"] += bool(bare.named("text"))
        for kind, words in (("insult", INSULTS), ("friendly", BENIGN_WORDS)):
            word, height = str(rng.choice(words)), int(rng.integers(12, 41))
            image, mask = draw_word(background, word, rng, height)
            report = detect(image)
            c = counts[kind]
            c["n"] += 1
            read = _reads(report, word, mask)
            c["ocr"] += read
            by_height["<20" if height < 20 else ">=20"].append(int(read))
            c["offensive"] += any(overlap(mask, a.area(mask.shape)) >= 0.5 for a in report.unsafe)
            if kind == "insult":
                for style in STYLES:
                    still_failed[style] += not second_opinion(obfuscate(image, mask, style)).passed
                still_failed["blur, box + 2 %"] += not second_opinion(obfuscate(image, box_around(mask), "blur")).passed
    timing = {}
    for side in (224, 1024):  # time per image at two sizes, a word drawn on each
        image, _ = draw_word(cv2.resize(make_background(seed=args.seed, size=args.size), (side, side)), "LOSER", rng, side // 10)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            detect(image)
            times.append(time.perf_counter() - t)
        timing[f"{side}x{side}"] = float(np.median(times))
    n = args.images
    figures = {
        "images_per_kind": n, "size": args.size, "seed": args.seed,
        "ocr_recall_insults": counts["insult"]["ocr"] / n,
        "ocr_recall_friendly": counts["friendly"]["ocr"] / n,
        "ocr_recall_by_height": {k: (sum(v) / len(v) if v else None, len(v)) for k, v in by_height.items()},
        "offensive_recall": counts["insult"]["offensive"] / n,
        "offensive_false_alarms_friendly": counts["friendly"]["offensive"] / n,
        "offensive_false_alarms_backgrounds": counts["background"]["offensive"] / n,
        "backgrounds_with_any_text_read": counts["background"]["any_text"] / n,
        "second_opinion_still_fails_after_obfuscating_the_word": {s: v / n for s, v in still_failed.items()},
        "detect_seconds_median": float(np.median(seconds)),
        "detect_seconds_by_size": timing,
        "load_average": os.getloadavg()[0],
    }
    if args.pipeline_images:
        figures["pipeline"] = pipeline_rows(args.pipeline_images, args.seed, args.size)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
