"""The evidence-grounded rationale: a plain statement of what the classifiers decided, which
regions had to be obfuscated to change that decision (the counterfactual), where they are and how
the confidence fell, plus the category's attributes a moderator should check. It describes the
evidence, not the picture, and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..schema import Rationale
from .prompts import load_templates

#: per category, the unsafe attributes the paper's moderator questions ask about (Tables 1–2), from
#: the editable prompt templates (``safeview/data/prompts.toml``)
ATTRIBUTES: dict[str, list[str]] = {key: list(cat.attributes) for key, cat in load_templates().categories.items()}


def _where(mask: np.ndarray) -> str:
    """Name the part of the image a mask mostly covers (a 3×3 grid: top-left … bottom-right)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return "nowhere"
    h, w = mask.shape
    row = ("top", "middle", "bottom")[min(2, int(3 * ys.mean() / h))]
    col = ("left", "centre", "right")[min(2, int(3 * xs.mean() / w))]
    return "centre" if (row, col) == ("middle", "centre") else f"{row}-{col}" if col != "centre" else f"{row}-centre"


def evidence_rationale(
    shape: tuple[int, int], control: dict[str, float], evidence: dict[str, Any], *, threshold: float = 0.5
) -> Rationale:
    """Build the rationale from ``control`` (category -> unsafe probability) and ``evidence``
    (category -> {"model", "found", "depth", "fraction", "steps", "after", "mask"})."""
    flagged = {c: p for c, p in control.items() if p >= 1 - threshold}
    if not flagged:
        text = "No category was flagged: " + ", ".join(f"{c} {p:.0%}" for c, p in control.items()) + "."
        return Rationale(text=text + " This statement is based on classifier scores, not a visual description.", backend="evidence")
    lines = []
    summary: dict[str, Any] = {}
    for category, p in sorted(flagged.items(), key=lambda kv: -kv[1]):
        ev = evidence.get(category, {})
        attributes = ATTRIBUTES.get(category, [])
        line = f"Flagged as {category.replace('_', '-')} with confidence {p:.0%}"
        if ev.get("model"):
            line += f" by the {ev['model']} model"
        line += "."
        if ev.get("found"):
            where = _where(ev["mask"]) if ev.get("mask") is not None else "the image"
            line += (
                f" Obfuscating {ev['depth']} region{'s' if ev['depth'] != 1 else ''} "
                f"({ev['fraction']:.1%} of the image, mostly {where}) lowers that confidence to {ev['after']:.0%},"
                " so the unsafe content lies in those regions; the rest of the image is left untouched."
            )
        elif ev:
            line += " No set of up to the allowed number of regions changed the decision, so the whole image is treated as unsafe."
        if attributes:
            line += " Attributes to check for this category: " + "; ".join(attributes) + "."
        lines.append(line)
        summary[category] = {k: v for k, v in ev.items() if k != "mask"}
    lines.append("This rationale is evidence-based (classifier scores and a counterfactual), not a visual description of the image.")
    return Rationale(text=" ".join(lines), backend="evidence", evidence={"control": control, "categories": summary})
