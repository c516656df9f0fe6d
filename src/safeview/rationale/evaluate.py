"""The ConditionalVLM evaluation harness (paper, "Evaluation" and Tables 1–2): ask the two generic
(coarse) and nine curated (fine) moderator questions of every image with each backend and guidance
setting, and write a sheet for human raters (CSV + HTML, images obfuscated by default) with an
automatic score — whether the answer names the attributes of the image's category
(:func:`~.prompts.attribute_match`). ``make_records`` builds the JSONL records that training
(:mod:`.train`) and this harness read, from an image folder and the question set.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..images import load_image
from ..obfuscate import Obfuscator
from .control import ControlCode, control_code
from .prompts import Templates, attribute_match, keyword_hits, load_templates

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
COLUMNS = ("image", "category", "backend", "guidance", "scope", "question", "answer", "attribute_match", "judge", "keyword_hits", "prompt", "rater_correct")


def make_records(
    folder: str | Path, *, templates: Templates | None = None, classifiers: Sequence | None = None, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """One record per (image, question) for every image under ``folder``: the generic questions and,
    when the image's parent folder names a category, that category's fine questions (else all of
    them). ``answer`` is left empty for a person to write; ``control`` is filled when ``classifiers``
    are given. Image paths are relative to ``folder``."""
    t = templates or load_templates()
    folder = Path(folder)
    records = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        category = path.parent.name if path.parent.name in t.categories else None
        control = control_code(classifiers, load_image(path), threshold=threshold).probabilities if classifiers else None
        for scope, question in t.questions():
            if scope != "generic" and category is not None and scope != category:
                continue
            rec = {"image": str(path.relative_to(folder)), "category": category, "scope": scope, "question": question, "answer": ""}
            if control is not None:
                rec["control"] = control
            records.append(rec)
    return records


def write_jsonl(records: Sequence[dict[str, Any]], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def evaluate(
    images: Sequence[dict[str, Any]],
    settings: Sequence[dict[str, Any]],
    *,
    templates: Templates | None = None,
    threshold: float = 0.5,
    judge: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Ask every question of every image (``{"image": array, "name", "category", "control"}``) under
    every setting (``{"backend": …, "guidance": …, other backend options}``); one row per answer.
    ``judge`` (``{"base_url", "model", …}``) adds a 0/1 LLM-judge score where the category is known."""
    from . import rationale
    from .openai_compat import judge as ask_judge

    t = templates or load_templates()
    rows = []
    for item in images:
        code = item["control"] if isinstance(item["control"], ControlCode) else ControlCode(dict(item["control"]), threshold)
        for setting in settings:
            for scope, question in t.questions():
                r = rationale(item["image"], code, {}, threshold=threshold, question=question, **setting)
                category = item.get("category")
                verdict = ""
                if judge and category in t.categories:
                    verdict = ask_judge(question, r.text, t.categories[category].name, list(t.categories[category].attributes), **judge)
                rows.append({
                    "image": item["name"], "category": item.get("category") or "", "backend": setting["backend"],
                    "guidance": setting.get("guidance", ""), "scope": scope, "question": question, "answer": r.text,
                    "attribute_match": int(attribute_match(r.text, item["category"], templates=t)) if item.get("category") else "",
                    "judge": verdict, "keyword_hits": json.dumps(keyword_hits(r.text, templates=t)), "prompt": r.prompt or "", "rater_correct": "",
                })
    return rows


def summarise(rows: Sequence[dict[str, Any]], *, score: str = "attribute_match") -> dict[tuple[str, str, str], float]:
    """Mean ``score`` (``attribute_match`` or ``judge``) per (backend, guidance, scope: ``coarse``
    or ``fine``) over the rows that have it."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for row in rows:
        if row[score] == "":
            continue
        key = (row["backend"], str(row["guidance"]), "coarse" if row["scope"] == "generic" else "fine")
        groups.setdefault(key, []).append(int(row[score]))
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def _thumbnail(image: np.ndarray, obfuscate: bool, size: int = 192) -> str:
    if obfuscate:  # raters see a heavily blurred image unless they ask otherwise
        image = Obfuscator("blur", sigma=8.0)(image, np.ones(image.shape[:2], bool))
    pil = Image.fromarray(image)
    pil.thumbnail((size, size))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_sheet(rows: Sequence[dict[str, Any]], images: Sequence[dict[str, Any]], out: str | Path, *, obfuscate: bool = True) -> tuple[Path, Path]:
    """Write ``out/ratings.csv`` (one row per answer; raters fill ``rater_correct`` with 1/0) and
    ``out/ratings.html`` (the same, with each image shown obfuscated unless ``obfuscate`` is off)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out / "ratings.csv", out / "ratings.html"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    thumbs = {item["name"]: _thumbnail(item["image"], obfuscate) for item in images}
    esc = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>SafeView VLM rating sheet</title>",
        "<style>body{font-family:sans-serif}td{border-top:1px solid #ccc;vertical-align:top;padding:4px}</style>",
        f"<h1>VLM rating sheet</h1><p>Images are {'obfuscated' if obfuscate else 'NOT obfuscated'}. "
        "For each answer, mark in ratings.csv (column rater_correct) 1 if it correctly identifies the unsafe attributes, else 0.</p>",
        "<table><tr>" + "".join(f"<th>{c}</th>" for c in ("image", "category", "backend", "guidance", "question", "answer", "auto match", "judge")) + "</tr>",
    ]
    for row in rows:
        parts.append(
            f"<tr><td><img src='{thumbs[row['image']]}' alt='{esc(row['image'])}'><br>{esc(row['image'])}</td>"
            + "".join(f"<td>{esc(str(row[c]))}</td>" for c in ("category", "backend", "guidance", "question", "answer", "attribute_match", "judge"))
            + "</tr>"
        )
    parts.append("</table>")
    html_path.write_text("\n".join(parts), encoding="utf-8")
    return csv_path, html_path
