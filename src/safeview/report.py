"""The human-friendly side of a run: per-image overlays and one HTML report.

Moderators should see as little unsafe content as possible, so every view is built on a blurred
thumbnail (heat map, region boundaries, chosen regions) or on the obfuscated output; the original
is only loaded when a reviewer clicks to reveal it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image
from skimage.segmentation import find_boundaries

from .obfuscate import Obfuscator
from .schema import ScanResult

THUMB = 384  # longest side of report images, px


def _thumb(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale == 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _resize_labels(values: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(values, (shape[1], shape[0]), interpolation=interpolation)


def _save(array: np.ndarray, path: Path) -> str:
    Image.fromarray(array).save(path, quality=88) if path.suffix == ".jpg" else Image.fromarray(array).save(path)
    return path.name


def heatmap_overlay(background: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """Attribution (H×W in [0,1]) as a colour map blended over ``background``."""
    heat = cv2.applyColorMap(np.uint8(np.clip(attribution, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    return cv2.addWeighted(background, 0.45, heat, 0.55, 0)


def regions_overlay(background: np.ndarray, segments: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Region boundaries in yellow, chosen (obfuscated) regions tinted red, over ``background``."""
    out = background.copy()
    tint = np.zeros_like(out)
    tint[...] = (220, 30, 30)
    out[mask] = cv2.addWeighted(out, 0.5, tint, 0.5, 0)[mask]
    out[find_boundaries(segments, mode="inner")] = (255, 230, 0)
    return out


def write_assets(result: ScanResult, assets_dir: Path, key: str) -> dict[str, Any]:
    """Write the report images of one scanned image; returns their file names (relative to
    ``assets_dir``) by kind, and per category the heat map and regions views."""
    art = result.artifacts
    if art is None:
        return {}
    assets_dir.mkdir(parents=True, exist_ok=True)
    small = _thumb(art.image)
    shape = small.shape[:2]
    blurred = Obfuscator("blur")(small, np.ones(shape, bool))
    files: dict[str, Any] = {
        "blurred": _save(blurred, assets_dir / f"{key}.blurred.jpg"),
        "original": _save(small, assets_dir / f"{key}.original.jpg"),
        "categories": {},
    }
    if art.obfuscated is not None:
        files["obfuscated"] = _save(_thumb(art.obfuscated), assets_dir / f"{key}.obfuscated.jpg")
    for category, attribution in art.attributions.items():
        seg = _resize_labels(art.segments[category].astype(np.int32), shape, nearest=True)
        mask = _resize_labels(art.masks[category].astype(np.uint8), shape, nearest=True).astype(bool)
        files["categories"][category] = {
            "heatmap": _save(heatmap_overlay(blurred, _resize_labels(attribution, shape, False)), assets_dir / f"{key}.{category}.heat.jpg"),
            "regions": _save(regions_overlay(blurred, seg, mask), assets_dir / f"{key}.{category}.regions.jpg"),
        }
    return files


def write_report(entries: list[dict[str, Any]], path: Path, *, title: str = "SafeView report") -> Path:
    """Render ``report.html``. Each entry is ``{"result": ScanResult-as-dict, "assets": {...}}``
    or ``{"error": message, "path": input}``."""
    env = Environment(loader=PackageLoader("safeview", "templates"), autoescape=select_autoescape(["html", "j2"]))
    ok = [e for e in entries if "result" in e]
    summary = {
        "images": len(entries),
        "unsafe": sum(e["result"]["verdict"] == "unsafe" for e in ok),
        "safe": sum(e["result"]["verdict"] == "safe" for e in ok),
        "failed": len(entries) - len(ok),
    }
    page = env.get_template("report.html.j2").render(title=title, entries=entries, summary=summary)
    path.write_text(page, encoding="utf-8")
    return path
