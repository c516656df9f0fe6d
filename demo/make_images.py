"""Write the bundled demo images: benign photos from scikit-image (no stand-in) and benign scenes
with drawn, synthetic stand-ins for each unsafe category (safeview.synth). Nothing here is real
unsafe content. The seeds are held out from the demo models' training data (seed 0)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from safeview.synth import CATEGORIES, make_sample

SEED_BASE = 9_000_000  # far from the training seeds 0..999_999


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).save(out / f"photo_{name}.jpg", quality=92)
    for i, category in enumerate(CATEGORIES):
        for j in range(2):
            sample = make_sample(category, True, seed=SEED_BASE + 10 * i + j, size=320)
            Image.fromarray(sample.image).save(out / f"standin_{category}_{j + 1}.png")
        distractor = make_sample(category, False, seed=SEED_BASE + 10 * i + 5, size=320)
        Image.fromarray(distractor.image).save(out / f"distractor_{category}.png")
    print(f"wrote {len(list(out.iterdir()))} images to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo/images"))
