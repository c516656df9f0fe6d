"""The per-image steps every scanned image or search query pays outside the model, each timed
against the plain formulation it replaced, in the same run on the same arrays (issue 18):
normalising one image into the model's C×h×w input (before: the H×W×3 float formula, then a
transposing copy), compositing an obfuscated frame into an image under a mask (boolean indexing), and
verification's mirrored copy (a reversed view made contiguous). Both versions' outputs are compared
and must be identical.

    python bench/hotpaths.py --repeat 200 --out bench/results/hotpaths.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forwards import median_ms  # noqa: E402
from segment import emit  # noqa: E402


def plain_normalise(preprocess, image: np.ndarray) -> np.ndarray:
    """The formula on the H×W×3 array, as SafeView computed it before: (x·scale − mean)/std, then C×h×w."""
    x = image.astype(np.float32) * preprocess.scale
    x = x[..., ::-1] if preprocess.channels == "BGR" else x
    return np.ascontiguousarray(((x - np.asarray(preprocess.mean, np.float32)) / np.asarray(preprocess.std, np.float32)).transpose(2, 0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from safeview.classify import Preprocess
    from safeview.obfuscate import Obfuscator
    from safeview.opennsfw import PREPROCESS

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    load = os.getloadavg()[0]
    rows = []
    # normalisation alone: the image already has the model's input size, so no resize, crop or JPEG step
    side = (args.size, args.size)
    for name, pre in (("Open-NSFW's (BGR, mean subtraction)", replace(PREPROCESS, resize=side, crop=None, jpeg_quality=None)),
                      ("ImageNet mean/std", Preprocess(resize=side))):
        same = np.array_equal(pre.array(image), plain_normalise(pre, image))
        rows.append((f"normalise into C×h×w, {name}", median_ms(lambda: plain_normalise(pre, image), args.repeat)[0],
                     median_ms(lambda: pre.array(image), args.repeat)[0], same))
    blur = Obfuscator("blur")
    for name, share in (("a quarter of the image (a search query)", 4), ("the whole image (the report's blurred view)", 1)):
        mask = np.zeros(image.shape[:2], bool)
        mask[: args.size // share] = True
        frame = blur.frame(image, mask)

        def plain_composite() -> np.ndarray:
            out = image.copy()
            out[mask] = frame[mask]
            return out

        same = np.array_equal(plain_composite(), blur(image, mask))
        rows.append((f"composite a blurred frame over {name}", median_ms(plain_composite, args.repeat)[0],
                     median_ms(lambda: blur(image, mask), args.repeat)[0], same))
    from safeview.verify import PERTURBATIONS

    def plain_mirror() -> np.ndarray:
        return np.ascontiguousarray(image[:, ::-1])

    rows.append(("the mirrored copy verification classifies", median_ms(plain_mirror, args.repeat)[0],
                 median_ms(lambda: PERTURBATIONS["mirror"](image), args.repeat)[0],
                 np.array_equal(plain_mirror(), PERTURBATIONS["mirror"](image))))
    lines = [
        "# Per-image hot paths outside the model",
        "",
        f"Command: `python bench/hotpaths.py {' '.join(sys.argv[1:])}` ({platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end); {args.size}² image, ms, median of {args.repeat}.",
        "",
        "| step | plain formulation | SafeView | ratio | identical output |",
        "|---|---:|---:|---:|---|",
        *(f"| {step} | {old:.3f} | {new:.3f} | {old / new:.1f}× | {'yes' if same else 'NO'} |" for step, old, new, same in rows),
    ]
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
