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
  safe in which the OCR still reads the insult, leak rate and obfuscated area;
- whether the second opinion's copies could be skipped when the OCR saw no text on the original
  (:func:`copies_rows`): how often a copy reads an insult (6-24 px at 256², scaled with the image)
  for which the pass on the original found no text box at all.

Usage: ``python bench/attributes.py --images 40 --seed 0 [--threads 2] [--copies-images 80 --copies-size 256]
[--out bench/results/attributes.json]``.
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

from safeview.attributes import SECOND_OPINION_COPIES, detect, overlap, second_opinion  # noqa: E402
from safeview.obfuscate import STYLES, obfuscate  # noqa: E402
from safeview.synth import BENIGN_WORDS, make_background  # noqa: E402
from safeview.threads import set_threads  # noqa: E402

#: mild insults, the offensive stand-ins (text only; no slurs)
INSULTS = ("LOSER", "IDIOT", "STUPID", "UGLY", "FREAK", "MORON", "DUMB", "PATHETIC")


#: The fonts words are drawn in: OpenCV's Hershey stroke fonts and TrueType faces that ship inside
#: matplotlib (sans, serif, monospace, bold and oblique), so recall is not a single font's.
HERSHEY_FONTS = {
    "hershey simplex": cv2.FONT_HERSHEY_SIMPLEX, "hershey duplex": cv2.FONT_HERSHEY_DUPLEX,
    "hershey triplex": cv2.FONT_HERSHEY_TRIPLEX, "hershey italic": cv2.FONT_HERSHEY_SIMPLEX | cv2.FONT_ITALIC,
}
TRUETYPE_FONTS = ("DejaVuSans-Bold", "DejaVuSans", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSansMono", "DejaVuSans-Oblique")
FONTS = (*HERSHEY_FONTS, *TRUETYPE_FONTS)
#: turns of the word, degrees (counter-clockwise); level text twice as often
ANGLES = (0.0, 0.0, -12.0, 12.0, -25.0, 25.0)


def _truetype(name: str, size: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(font_manager.__file__).parent / "mpl-data" / "fonts" / "ttf" / f"{name}.ttf"), size)


def _layers(word: str, font: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``word`` in ``font`` with capitals about ``height`` px tall, as two tight uint8 layers: the
    outlined word and its core (the glyphs)."""
    if font in HERSHEY_FONTS:
        face = HERSHEY_FONTS[font]
        scale = height / cv2.getTextSize("H", face, 1.0, 1)[0][1]
        thickness = max(1, round(height / 9))
        rim = thickness + 2 * max(1, thickness // 2)
        (tw, th), base = cv2.getTextSize(word, face, scale, rim)
        pad = rim + 2
        size = (th + base + 2 * pad, tw + 2 * pad + height // 3)  # italics lean past the advance
        outline, core = np.zeros(size, np.uint8), np.zeros(size, np.uint8)
        cv2.putText(outline, word, (pad, pad + th), face, scale, 255, rim, cv2.LINE_AA)
        cv2.putText(core, word, (pad, pad + th), face, scale, 255, thickness, cv2.LINE_AA)
        return outline, core
    from PIL import Image, ImageDraw

    probe = _truetype(font, 100)
    x0, y0, x1, y1 = probe.getbbox("H")
    face = _truetype(font, max(6, round(100 * height / (y1 - y0))))
    stroke = max(1, round(height / 9))
    x0, y0, x1, y1 = face.getbbox(word, stroke_width=stroke)
    size = (x1 - x0 + 4, y1 - y0 + 4)
    outline, core = Image.new("L", size), Image.new("L", size)
    ImageDraw.Draw(outline).text((2 - x0, 2 - y0), word, font=face, fill=255, stroke_width=stroke, stroke_fill=255)
    ImageDraw.Draw(core).text((2 - x0, 2 - y0), word, font=face, fill=255)
    return np.asarray(outline), np.asarray(core)


def draw_word(
    image: np.ndarray, word: str, rng: np.random.Generator, height: int, font: str | None = None, angle: float | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``image`` with ``word`` drawn at a random place, capitals about ``height`` px tall, in
    ``font`` (one of :data:`FONTS`, else drawn at random), turned by ``angle`` degrees (else one of
    :data:`ANGLES`), white on a dark outline or the reverse; its exact pixel mask; and what was drawn
    (``height`` shrinks when the word would not fit the image)."""
    h, w = image.shape[:2]
    font = str(rng.choice(FONTS)) if font is None else font
    angle = float(rng.choice(ANGLES)) if angle is None else angle
    outline, core = _layers(word, font, height)
    turn = cv2.getRotationMatrix2D((outline.shape[1] / 2, outline.shape[0] / 2), angle, 1.0)
    corners = np.array([[0, 0, 1], [outline.shape[1], 0, 1], [0, outline.shape[0], 1], [outline.shape[1], outline.shape[0], 1]], float)
    span = np.ptp(corners @ turn.T, axis=0)
    if span[0] > w - 4 or span[1] > h - 4:  # too big for the image: smaller, so the word is never cut off
        return draw_word(image, word, rng, max(8, int(height * min((w - 4) / span[0], (h - 4) / span[1]))), font, angle)
    turn[:, 2] += (span - outline.shape[::-1]) / 2  # keep the turned word inside its canvas
    canvas = (int(np.ceil(span[0])), int(np.ceil(span[1])))
    outline, core = (cv2.warpAffine(m, turn, canvas) for m in (outline, core))
    x = int(rng.integers(2, max(3, w - canvas[0] - 1)))
    y = int(rng.integers(2, max(3, h - canvas[1] - 1)))
    full_outline, full_core = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    full_outline[y : y + canvas[1], x : x + canvas[0]] = outline
    full_core[y : y + canvas[1], x : x + canvas[0]] = core
    light, dark = (255, 255, 255), (20, 20, 20)
    fg, bg = (light, dark) if rng.random() < 0.7 else (dark, light)
    out = image.copy()
    out[full_outline > 127] = bg
    out[full_core > 127] = fg
    return out, full_outline > 127, {"height": height, "font": font, "angle": angle}


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
    the OCR still reads the insult, the leak rates of the square and of the word among the outputs
    called safe (the stand-in less than 80 % covered, :mod:`safeview.leakage`'s rule), their
    obfuscated area against the truth's, and how often and by how much (against the word's own
    pixels) the second opinion grew the mask over text the classifier's regions left readable. "Readable" means the
    OCR reads the insult on the output or on any of its re-upload copies that the second opinion
    checks."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from scenes import RedDetector

    from safeview.pipeline import Safeguard

    rng = np.random.default_rng([seed, 17])
    scenes = []
    for i in range(n):
        image = make_background(seed=seed * 100_003 + 50_000 + i, size=size)
        word = str(rng.choice(INSULTS))
        image, word_mask, _ = draw_word(image, word, rng, int(rng.integers(20, 37)))
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
        safe = readable = 0
        leaks = {"square": 0, "word": 0}
        ratios, seconds, grown = [], [], []
        for image, word, word_mask, square in scenes:
            t = time.perf_counter()
            result = guard.scan(image)
            seconds.append(time.perf_counter() - t)
            if result.artifacts is not None and result.artifacts.grown is not None:
                grown.append(result.artifacts.grown.sum() / word_mask.sum())
            if result.obfuscated_safe:
                safe += 1
                mask = result.mask.to_mask()
                for label, truth in (("square", square), ("word", word_mask)):
                    leaks[label] += overlap(truth, mask) < 0.8
                ratios.append(mask.sum() / (square | word_mask).sum())
                opinion = second_opinion(result.artifacts.obfuscated, copies=SECOND_OPINION_COPIES)
                readable += any(_reads(r, word, word_mask) for r in (opinion.report, *opinion.copy_reports.values()))
        rows[name] = {
            "images": n, "called_safe": safe, "called_safe_with_the_insult_readable": readable,
            "leak_rate_square": leaks["square"] / max(1, safe), "leak_rate_word": leaks["word"] / max(1, safe),
            "area_ratio_median": float(np.median(ratios)) if ratios else None,
            "seconds_median": float(np.median(seconds)),
            "second_opinion_grew_the_mask": len(grown),
            "grown_area_over_word_pixels_median": float(np.median(grown)) if grown else None,
        }
    return rows


def _rates(hits: dict[str, list[int]]) -> dict[str, tuple[float | None, int]]:
    """Per key: the share of hits and how many tries."""
    return {k: (sum(v) / len(v) if v else None, len(v)) for k, v in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40, help="images per kind (insult, friendly word)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipeline-images", type=int, default=20, help="images of the pipeline comparison (0: skip it)")
    parser.add_argument("--copies-images", type=int, default=0, help="insults of the copies check (0: skip it)")
    parser.add_argument("--copies-size", type=int, default=256, help="image side of the copies check")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the detectors, torch and BASS")
    args = parser.parse_args()
    set_threads(args.threads)
    figures = {"threads": args.threads, "load_average_start": os.getloadavg()[0], "size": args.size, "seed": args.seed}
    if args.images:
        figures |= detector_rows(args.images, args.seed, args.size)
    if args.pipeline_images:
        figures["pipeline"] = pipeline_rows(args.pipeline_images, args.seed, args.size)
    if args.copies_images:
        figures["copies"] = copies_rows(args.copies_images, args.seed, args.copies_size)
    figures["load_average"] = os.getloadavg()[0]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


def copies_rows(n: int, seed: int, size: int) -> dict:
    """On ``n`` insults drawn near the OCR's size limit (6-24 px tall at 256², scaled to ``size``):
    how often the original's pass reads the word, how often any of the second opinion's copies
    (:data:`SECOND_OPINION_COPIES`, of the original) does, and how often a copy reads it although
    the original's pass found no text box on the word, or no text at all. The second opinion could
    skip its copies when the original shows no text only if that last count were zero."""
    rng = np.random.default_rng([seed, 18])
    rows = []
    for i in range(n):
        background = cv2.resize(make_background(seed=seed * 100_003 + 50_000 + i, size=256), (size, size))
        word, height = str(rng.choice(INSULTS)), int(rng.integers(6, 25) * size / 256)
        image, mask, drawn = draw_word(background, word, rng, height)
        opinion = second_opinion(image, ("ocr",), SECOND_OPINION_COPIES)  # the original and its copies, mapped back
        original = opinion.report
        read_by = [name for name, report in opinion.copy_reports.items() if _reads(report, word, mask)]
        rows.append({"height": drawn["height"], "original_reads": _reads(original, word, mask), "copies_read": read_by,
                     "box_on_word": any((mask & a.area(mask.shape)).any() for a in original.named("text")),
                     "any_text": bool(original.named("text"))})
    return {
        "images": n, "size": size,
        "original_reads": sum(r["original_reads"] for r in rows),
        "a_copy_reads": sum(bool(r["copies_read"]) for r in rows),
        "a_copy_reads_no_box_on_the_word": sum(bool(r["copies_read"]) and not r["box_on_word"] for r in rows),
        "a_copy_reads_no_text_at_all": sum(bool(r["copies_read"]) and not r["any_text"] for r in rows),
        "rows": rows,
    }


def detector_rows(n: int, seed: int, size: int) -> dict:
    """The detectors on ``n`` insults, ``n`` friendly words and ``n`` bare backgrounds: OCR recall
    (by size, font and angle), offensive recall and false alarms, what survives each obfuscation of
    the word's pixels, and the time per image."""
    rng = np.random.default_rng(seed)
    counts = {"insult": {"n": 0, "ocr": 0, "offensive": 0}, "friendly": {"n": 0, "ocr": 0, "offensive": 0},
              "background": {"n": 0, "offensive": 0, "any_text": 0}}
    by_height: dict[str, list[int]] = {"<20": [], ">=20": []}  # OCR reads the word, per drawn size
    by_font: dict[str, list[int]] = {}  # the same from 20 px up, per font and per angle
    by_angle: dict[str, list[int]] = {}
    still_failed = {style: 0 for style in (*STYLES, "blur, box + 2 %")}
    seconds: list[float] = []
    for i in range(n):
        background = make_background(seed=seed * 100_003 + i, size=size)
        t = time.perf_counter()
        bare = detect(background)
        seconds.append(time.perf_counter() - t)
        counts["background"]["n"] += 1
        counts["background"]["offensive"] += bool(bare.unsafe)
        counts["background"]["any_text"] += bool(bare.named("text"))
        for kind, words in (("insult", INSULTS), ("friendly", BENIGN_WORDS)):
            word, height = str(rng.choice(words)), int(rng.integers(12, 41))
            image, mask, drawn = draw_word(background, word, rng, height)
            report = detect(image)
            c = counts[kind]
            c["n"] += 1
            read = _reads(report, word, mask)
            c["ocr"] += read
            by_height["<20" if drawn["height"] < 20 else ">=20"].append(int(read))
            if drawn["height"] >= 20:
                by_font.setdefault(drawn["font"], []).append(int(read))
                by_angle.setdefault(f"{abs(drawn['angle']):g}", []).append(int(read))
            c["offensive"] += any(overlap(mask, a.area(mask.shape)) >= 0.5 for a in report.unsafe)
            if kind == "insult":
                for style in STYLES:
                    still_failed[style] += not second_opinion(obfuscate(image, mask, style)).passed
                still_failed["blur, box + 2 %"] += not second_opinion(obfuscate(image, box_around(mask), "blur")).passed
    timing = {}
    for side in (224, 1024):  # time per image at two sizes, a word drawn on each
        image, _, _ = draw_word(cv2.resize(make_background(seed=seed, size=size), (side, side)), "LOSER", rng, side // 10)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            detect(image)
            times.append(time.perf_counter() - t)
        timing[f"{side}x{side}"] = float(np.median(times))
    return {
        "images_per_kind": n,
        "ocr_recall_insults": counts["insult"]["ocr"] / n,
        "ocr_recall_friendly": counts["friendly"]["ocr"] / n,
        "ocr_recall_by_height": _rates(by_height),
        "ocr_recall_from_20px_by_font": _rates(by_font),
        "ocr_recall_from_20px_by_angle": _rates(by_angle),
        "offensive_recall": counts["insult"]["offensive"] / n,
        "offensive_false_alarms_friendly": counts["friendly"]["offensive"] / n,
        "offensive_false_alarms_backgrounds": counts["background"]["offensive"] / n,
        "backgrounds_with_any_text_read": counts["background"]["any_text"] / n,
        "second_opinion_still_fails_after_obfuscating_the_word": {s: v / n for s, v in still_failed.items()},
        "detect_seconds_median": float(np.median(seconds)),
        "detect_seconds_by_size": timing,
    }


if __name__ == "__main__":
    main()
