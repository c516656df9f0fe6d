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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _category_sentence(ev: dict[str, Any]) -> str:
    """What CSE established for one category, claiming no more than its typed result shows."""
    if not ev:
        return " Obfuscating the other flagged categories' regions already hid it from this model."
    if ev.get("found") and ev.get("verified"):
        where = _where(ev["mask"]) if ev.get("mask") is not None else "the image"
        regions = ev["depth"] + ev.get("completed", 0)
        how = f"the search needed {ev['depth']}"
        if ev.get("completed"):
            how += f" and evidence completion added {ev['completed']} to cover the rest of the content"
        return (
            f" Obfuscating {_plural(regions, 'region')} ({ev['fraction']:.1%} of the image, mostly {where}; {how})"
            f" lowers that confidence to {ev['after']:.0%}, so the unsafe content this model responds to lies in those regions."
        )
    if ev.get("found"):
        return (
            f" The search lowered that confidence to {ev['after']:.0%}, but its output failed verification"
            " (the margin, another model or a re-upload copy), so those regions are not claimed to hold the content."
        )
    return " No set of up to the allowed number of regions lowered that confidence far enough."


def _output_sentence(out: dict[str, Any]) -> str:
    models = ", ".join(out.get("models", []))
    if out.get("verified"):
        copies = ", ".join(out.get("perturbations", [])) or "no re-upload copies"
        return (
            f"The obfuscated output was verified safe by every model ({models}), with a margin, also on re-upload copies"
            f" ({copies}); pixels outside the obfuscated regions are left bit-identical."
        )
    fallback = out.get("fallback")
    if fallback == "full":
        return "No output could be verified safe, so the whole image is obfuscated; this output is not verified."
    if fallback == "prefix":
        return ("No output could be verified safe; only the regions the search chose are obfuscated, and this output is"
                " not verified and may still show unsafe content.")
    return "No output could be verified safe and nothing was obfuscated (fallback 'none'): the image is not safe to show."


def evidence_rationale(
    shape: tuple[int, int], control: dict[str, float], evidence: dict[str, Any], *, threshold: float = 0.5
) -> Rationale:
    """Build the rationale from ``control`` (category -> unsafe probability) and ``evidence``
    (category -> {"model", "found", "verified", "depth", "completed", "fraction", "after",
    "mask"}, and ``"_output"`` -> {"verified", "fallback", "perturbations", "models"}), the typed
    scan results: no sentence claims more than they show."""
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
        line += "." + _category_sentence(ev)
        if attributes:
            line += " Attributes to check for this category: " + "; ".join(attributes) + "."
        lines.append(line)
        summary[category] = {k: v for k, v in ev.items() if k != "mask"}
    if "_output" in evidence:
        lines.append(_output_sentence(evidence["_output"]))
        summary["output"] = evidence["_output"]
    lines.append("This rationale is evidence-based (classifier scores and a counterfactual), not a visual description of the image.")
    return Rationale(text=" ".join(lines), backend="evidence", evidence={"control": control, "categories": summary})
