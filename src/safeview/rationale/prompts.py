"""The prior of ConditionalVLM (paper, "Conditional Vision-Language Model"): it turns the control
code into the conditioned instruct prompt that tells the VLM which unsafe attributes to inspect,
per flagged category and by confidence. Questions, attributes and phrasing come from an editable
TOML file (default ``safeview/data/prompts.toml``: the paper's 2 generic and 9 fine-grained moderator
questions of its Tables 1–2).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import SafeViewError
from .control import ControlCode

DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "prompts.toml"


@dataclass(frozen=True)
class Category:
    name: str
    attributes: tuple[str, ...]
    keywords: tuple[str, ...]
    questions: tuple[str, ...]


@dataclass(frozen=True)
class Templates:
    generic: tuple[str, ...]
    bands: tuple[tuple[float, str], ...]  # (minimum confidence, text), highest first
    instruction: str
    categories: dict[str, Category]

    def questions(self) -> list[tuple[str, str]]:
        """Every question as ``(scope, text)``: scope ``generic`` or the category it probes."""
        out = [("generic", q) for q in self.generic]
        for key, cat in self.categories.items():
            out += [(key, q) for q in cat.questions]
        return out


def load_templates(path: str | Path = DEFAULT_PROMPTS) -> Templates:
    """Read a prompts file (see ``safeview/data/prompts.toml`` for the format); cached until the
    file changes."""
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError as exc:
        raise SafeViewError(f"cannot read prompt templates {path}: {exc}") from exc
    return _load_templates(str(Path(path).resolve()), stamp)


@lru_cache(maxsize=8)
def _load_templates(path: str, stamp: int) -> Templates:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        bands = sorted(((float(b["min"]), str(b["text"])) for b in raw["confidence"].values()), reverse=True)
        categories = {
            key: Category(
                name=str(c.get("name", key)),
                attributes=tuple(c["attributes"]),
                keywords=tuple(k.lower() for k in c["keywords"]),
                questions=tuple(c.get("questions", ())),
            )
            for key, c in raw["categories"].items()
        }
        return Templates(tuple(raw["generic"]), tuple(bands), str(raw["instruction"]), categories)
    except (OSError, KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise SafeViewError(f"cannot read prompt templates {path}: {exc}") from exc


def conditioned_prompt(control: ControlCode, question: str, *, templates: Templates | None = None) -> str:
    """The CIIT instruct prompt for ``question`` given the control code: one line per flagged
    category (phrased by the highest confidence band it reaches), then the instruction. With no
    category flagged the prior adds nothing and the question is asked as is."""
    t = templates or load_templates()
    lines = []
    for category, p in control.flagged.items():
        band = next((text for low, text in t.bands if p >= low), None)
        cat = t.categories.get(category)
        if band is None or cat is None:
            continue
        lines.append(band.format(category=cat.name, attributes=", ".join(cat.attributes)))
    if not lines:
        return question
    return " ".join(lines + [t.instruction.format(question=question)])


def keyword_hits(text: str, *, templates: Templates | None = None) -> dict[str, int]:
    """Per category, how many of its attribute keywords occur in ``text`` (whole words, case-insensitive)."""
    t = templates or load_templates()
    low = text.lower()
    return {
        key: sum(bool(re.search(rf"(?<![a-z]){re.escape(k)}(?![a-z])", low)) for k in cat.keywords)
        for key, cat in t.categories.items()
    }


def attribute_match(text: str, category: str, *, templates: Templates | None = None) -> bool:
    """The automatic score of the evaluation: ``text`` names an attribute of ``category`` and more
    of its keywords than of any other category's."""
    hits = keyword_hits(text, templates=templates)
    own = hits.get(category, 0)
    return own > 0 and all(n < own for c, n in hits.items() if c != category)
