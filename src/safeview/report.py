"""The human-friendly side of a run: per-image overlays and one HTML report.

Moderators should see as little unsafe content as possible, so every view is built on a blurred
thumbnail (heat map, region boundaries, chosen regions) or on the obfuscated output. The report
holds no unblurred copy of an original unless asked (``report_originals="full"``); by default a
reviewer reveals one by opening the input file itself, from a link.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from skimage.segmentation import find_boundaries

from .obfuscate import Obfuscator
from .schema import ScanResult

THUMB = 384  # longest side of report images, px


def thumbnail(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    """``image`` scaled down (never up) so its longest side is at most ``size`` pixels."""
    h, w = image.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale == 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _resize_labels(values: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(values, (shape[1], shape[0]), interpolation=interpolation)


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


def evidence_overlay(background: np.ndarray, result: ScanResult, protected: list[np.ndarray]) -> np.ndarray:
    """Outlines only, over the blurred ``background``: the protected regions (``protected``, their
    masks at full resolution) in green, and the boxes of the attributes the detectors found on the
    original in orange. Nothing of the original is unblurred."""
    out = background.copy()
    shape = out.shape[:2]
    for mask in protected:
        small = _resize_labels(mask.astype(np.uint8), shape, nearest=True).astype(bool)
        out[find_boundaries(small, mode="inner")] = (40, 220, 90)
    sy, sx = shape[0] / result.input.height, shape[1] / result.input.width
    for attribute in result.attributes.attributes if result.attributes else []:
        if attribute.box:
            x0, y0, x1, y1 = attribute.box
            cv2.rectangle(out, (round(x0 * sx), round(y0 * sy)), (max(0, round(x1 * sx) - 1), max(0, round(y1 * sy) - 1)),
                          (255, 150, 0), 1)
    return out


def render_views(result: ScanResult, *, originals: str = "none") -> dict[str, np.ndarray]:
    """What a reviewer sees of one scanned image, without revealing anything unasked: a blurred
    thumbnail (``blurred``), the obfuscated output (``obfuscated``, full size), and per
    counterfactual ``i`` the attribution heat map (``heatmap-i``) and the chosen regions
    (``regions-i``) drawn over the blurred thumbnail, and, when there are protected regions or
    detected attributes, their outlines over it (``evidence``). The unblurred original
    (``original``, full size) only with ``originals="full"``. One renderer for the report, batch
    and the service."""
    art = result.artifacts
    if art is None:
        return {}
    small = thumbnail(art.image)
    shape = small.shape[:2]
    blurred = Obfuscator("blur")(small, np.ones(shape, bool))
    views: dict[str, np.ndarray] = {"blurred": blurred}
    if originals == "full":
        views["original"] = art.image
    if art.obfuscated is not None:
        views["obfuscated"] = art.obfuscated
    for index, cf in enumerate(result.counterfactuals):
        seg = _resize_labels(art.segments[cf.category].astype(np.int32), shape, nearest=True)
        mask = _resize_labels(art.masks[cf.category].astype(np.uint8), shape, nearest=True).astype(bool)
        views[f"heatmap-{index}"] = heatmap_overlay(blurred, _resize_labels(art.attributions[cf.category], shape, False))
        views[f"regions-{index}"] = regions_overlay(blurred, seg, mask)
    if art.protected or (result.attributes and result.attributes.attributes):
        views["evidence"] = evidence_overlay(blurred, result, [r.mask for r in art.protected])
    return views


def report_assets(result: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The report's images of one result (as a dict), from the ``view.*`` files its ``outputs``
    name, relative to the report's ``folder``; ``original_link`` points at the input file itself
    when no copy of the original was written (the report never copies it unasked)."""
    outputs = result.get("outputs", {})
    relative = {k.removeprefix("view."): os.path.relpath(v, folder) for k, v in outputs.items() if k.startswith("view.")}
    path = result.get("input", {}).get("path")
    return {
        "blurred": relative.get("blurred"),
        "original": relative.get("original"),
        "original_link": Path(path).resolve().as_uri() if path and "original" not in relative else None,
        "obfuscated": relative.get("obfuscated"),
        "evidence": relative.get("evidence"),
        "categories": {
            cf["category"]: {"heatmap": relative.get(f"heatmap-{i}"), "regions": relative.get(f"regions-{i}")}
            for i, cf in enumerate(result.get("counterfactuals", []))
        },
    }


def write_report(
    entries: list[dict[str, Any]], path: Path, *, title: str = "SafeView report", models: Sequence[dict[str, Any]] = ()
) -> Path:
    """Render ``report.html``. Each entry is ``{"result": ScanResult-as-dict, "assets": {...}}``
    (:func:`report_assets`) or an error record ``{"path": input, "error": message}``; ``models``
    are the cards (:func:`safeview.evaluate.model_card`) of the models that scanned them, so a
    reader sees what each verdict's model is worth (held-out accuracy, false alarms on real photos,
    training data, warnings)."""
    env = Environment(loader=PackageLoader("safeview", "templates"), autoescape=select_autoescape(["html", "j2"]))
    ok = [e for e in entries if "result" in e]
    summary = {
        "images": len(entries),
        "unsafe": sum(e["result"]["verdict"] == "unsafe" for e in ok),
        "safe": sum(e["result"]["verdict"] == "safe" for e in ok),
        "failed": len(entries) - len(ok),
    }
    page = env.get_template("report.html.j2").render(title=title, entries=entries, summary=summary, models=list(models))
    path.write_text(page, encoding="utf-8")
    return path
