"""The evidence-grounded rationale: a plain statement of what the classifiers decided, which
regions had to be obfuscated to change that decision (the counterfactual), where they are and how
the confidence fell, plus the category's attributes a moderator should check. It describes the
evidence, not the picture, and says so.

Given the attributes that real detectors found on the original image (:mod:`safeview.attributes`),
it also names them and where they lie relative to the obfuscated regions — the paper's rationale
"grounded in unsafe image-specific attributes", here from detectors rather than a VLM — says which
attributes were not checked, and answers those of the paper's nine fine-grained moderator questions
(Table 2) that a detector can answer, leaving the others unanswered. Every such sentence is built
from a detector's output: none names an attribute that no detector saw. Of the detectors' second
opinion on the output it states the copies they looked at and those only the models checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..attributes import AttributeReport, AttributeReportModel, overlap
from ..attributes.base import Attribute
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


def _opinion_sentence(opinion: dict[str, Any], perturbations: Sequence[str]) -> str:
    """What the attribute detectors' second opinion on the output covered and found: the detectors
    that ran, the re-upload copies they also looked at (the others in ``perturbations`` were
    checked by the models only), what they still found and where, and the detectors that did not
    run on all of them."""
    copies = list(opinion.get("copies", []))
    if opinion.get("found"):
        where: dict[str, list[str]] = {}
        for f in opinion["found"]:
            label = f'"{f["text"]}"' if f.get("text") else _ATTRIBUTE_WORDS.get(f["name"], f["name"])
            where.setdefault(label, []).append(f"the {f['seen_on']} copy" if f.get("seen_on") else "the output itself")
        found = [f"{label} (read on {_join(list(dict.fromkeys(on)))})" for label, on in where.items()]
        return f"On the output they checked, the attribute detectors still found {_join(found)}."
    ran, skipped = opinion.get("detectors", []), opinion.get("not_checked", [])
    if not ran:
        return f"The attribute detectors ({', '.join(skipped)}) did not run on the output, so none checked it."
    on = "the output" + (f" and its re-upload copies ({', '.join(copies)})" if copies else " only")
    after = ", once the obfuscated area was grown over what they had found," if opinion.get("grown") else ""
    sentence = f"The attribute detectors ({', '.join(ran)}){after} found no unsafe attribute on {on}"
    others = [name for name in perturbations if name not in copies]
    if others:
        sentence += f"; the {', '.join(others)} {'copy was' if len(others) == 1 else 'copies were'} checked by the models only"
    if skipped:
        sentence += f"; the {_join(skipped)} detector{'s' if len(skipped) > 1 else ''} did not run on all of them"
    return sentence + "."


def _protected_sentence(items: Sequence[dict[str, Any]], fallback: str | None) -> str:
    """What happened to the protected regions (:mod:`safeview.protect`), from their kept shares."""
    def name(item: dict[str, Any]) -> str:
        by = {"faces": "found by the face detector", "reviewer": "marked by a reviewer"}.get(item["source"], "marked by the user")
        return f"the {item['label']} ({by})" if item["label"] != "protected" else f"a protected region ({by})"

    kept = [name(i) for i in items if i["kept"] >= 1.0]
    touched = [i for i in items if i["kept"] < 1.0]
    parts = []
    if kept:
        parts.append(f"{_join(kept)} {'was' if len(kept) == 1 else 'were'} left visible, bit-identical to the original.")
    if touched and fallback == "full":
        parts.append(f"Because no output could be verified, {_join([name(i) for i in touched])} "
                     f"{'is' if len(touched) == 1 else 'are'} obfuscated with the rest of the image.")
    elif touched:
        shares = [f"{name(i)} entirely" if i["kept"] <= 0 else f"{1 - i['kept']:.0%} of {name(i)}" for i in touched]
        rest = "; the rest of it was left bit-identical" if any(i["kept"] > 0 for i in touched) else ""
        parts.append(f"SafeView had to obfuscate {_join(shares)}, because the content could not be hidden otherwise{rest}.")
    parts[0] = parts[0][0].upper() + parts[0][1:]
    return " ".join(parts)


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
#: attribute name -> how a sentence names it
_ATTRIBUTE_WORDS = {"text": "text in the image", "offensive_text": "offensive wording"}
#: attribute name -> how a sentence names its detector's score
_SCORE_WORDS = {"offensive_text": "offensive"}
#: the most benign texts a sentence lists by name
_MAX_LISTED = 5


def _ordinal(i: int) -> str:
    return _ORDINALS[i] if i < len(_ORDINALS) else f"{i + 1}th"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _placement(area: np.ndarray, regions: Sequence[np.ndarray]) -> str:
    """Where ``area`` lies relative to the obfuscated ``regions`` (in the order obfuscated)."""
    if not regions:
        return f"lies in the {_where(area)} of the image"
    union = np.logical_or.reduce([np.asarray(r, bool) for r in regions])
    total = overlap(area, union)
    if total == 0:
        return "lies outside the obfuscated regions and is left visible"
    names = [_ordinal(i) for i, r in enumerate(regions) if overlap(area, np.asarray(r, bool)) > 0]
    where = f"the {_join(names)} obfuscated region{'s' if len(names) > 1 else ''}"
    if total >= 0.95:
        return f"lies in {where}"
    return f"is {total:.0%} covered by {where}; the rest is left visible"


def _quoted(a: Attribute) -> str:
    return f'"{a.text}"'


def _inside(part: Attribute, whole: Attribute, shape: tuple[int, int]) -> bool:
    return overlap(part.area(shape), whole.area(shape)) >= 0.9


def _answer_hate_text(report: AttributeReport) -> str | None:
    """The paper's "Is there any text in the image that might be considered hate speech?", from the
    OCR and the offensive-language detector; unanswered unless both looked."""
    if "text" not in report.checked:
        return None
    texts, offensive = report.named("text"), report.named("offensive_text")
    if not texts:
        return "No: the OCR read no text."
    if "offensive_text" not in report.checked:
        return None
    if offensive:
        flagged = "; ".join(f"{_quoted(a)} ({a.score:.2f})" for a in offensive)
        return f"Yes, as far as the detectors tell: the offensive-language detector (not a hate-speech model) flags {flagged}."
    read = ", ".join(_quoted(a) for a in texts[:_MAX_LISTED])
    return f"No: the offensive-language detector flags none of the text the OCR read ({read})."


#: the paper's fine-grained questions (Table 2, ``prompts.toml``) a detector here can answer
ANSWERS: dict[str, Callable[[AttributeReport], str | None]] = {
    "Is there any text in the image that might be considered hate speech?": _answer_hate_text,
}


@dataclass(frozen=True)
class AttributeEvidence:
    """What the detectors' attributes let the rationale say: ``sentences`` (found attributes and
    where they lie, what was not checked) and ``answers`` (fine-grained question -> answer, or
    ``None`` where no detector that ran can answer it)."""

    sentences: tuple[str, ...]
    answers: dict[str, str | None]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def attribute_sentences(
    report: AttributeReport,
    *,
    regions: Sequence[np.ndarray] = (),
    categories: Sequence[str] | None = None,
) -> AttributeEvidence:
    """Ground the rationale in ``report``, the attributes found on the *original* image (and those
    the second opinion read only on a re-upload copy of the output, said so; see
    :func:`safeview.attributes.add_findings`): each unsafe attribute with its detectors' scores and
    where it lies relative to ``regions`` (boolean masks in the order obfuscated, e.g.
    ``[segments == r for r in counterfactual.regions]``, or ``[mask]`` for one obfuscated area;
    none when nothing was obfuscated), the other text read, the attributes left unchecked and why,
    and the answers to the fine-grained questions of ``categories`` (default: all) that a detector
    can give."""
    shape = report.shape
    sentences: list[str] = []
    texts = report.named("text")
    claimed: set[int] = set()
    for a in report.unsafe:
        parts = [i for i, t in enumerate(texts) if _inside(t, a, shape)]
        claimed |= set(parts)
        read = f"OCR {min(texts[i].score for i in parts):.2f}" if parts else None
        if len(parts) > 1:
            read += f", read in {len(parts)} boxes"
        if a.seen_on:  # the second opinion read it on a re-upload copy of the output, not on the image itself
            read = f"{read + ', ' if read else ''}read only on the {a.seen_on} copy of the output"
        scores = "; ".join(s for s in (read, f"{_SCORE_WORDS.get(a.name, a.detector)}, {a.score:.2f}") if s)
        what = f"The text {_quoted(a)}" if a.text is not None else f"The {_ATTRIBUTE_WORDS.get(a.name, a.name)}"
        sentences.append(f"{what} ({scores}) {_placement(a.area(shape), regions)}.")
    others = [t for i, t in enumerate(texts) if i not in claimed]
    if others:
        listed = ", ".join(f"{_quoted(t)} ({t.score:.2f})" for t in others[:_MAX_LISTED])
        more = f" and {len(others) - _MAX_LISTED} more" if len(others) > _MAX_LISTED else ""
        lead = "The OCR also read" if report.unsafe else "The OCR read"
        judged = (
            ("none of which the offensive-language detector flags" if len(others) > 1 else "which the offensive-language detector does not flag")
            if "offensive_text" in report.checked else "not checked for offensive wording"
        )
        sentences.append(f"{lead} {listed}{more}, {judged}.")
    for name, run in sorted(report.unchecked.items()):
        sentences.append(f"Not checked: {_ATTRIBUTE_WORDS.get(name, name)} (the {run.name} detector {run.status}: {run.detail}).")
    templates = load_templates()
    wanted = templates.categories if categories is None else [c for c in categories if c in templates.categories]
    answers: dict[str, str | None] = {}
    for category in wanted:
        for question in templates.categories[category].questions:
            answer = ANSWERS.get(question)
            answers[question] = answer(report) if answer else None
    answered = [f"{q} {a}" for q, a in answers.items() if a is not None]
    if answered:
        sentences.append("Moderator questions a detector answers: " + " ".join(answered))
    unanswered = [q for q, a in answers.items() if a is None]
    if unanswered:
        sentences.append("Left unanswered, since no detector that ran can answer them: " + " ".join(unanswered))
    return AttributeEvidence(tuple(sentences), answers)


def evidence_rationale(
    shape: tuple[int, int],
    control: dict[str, float],
    evidence: dict[str, Any],
    *,
    threshold: float = 0.5,
    attributes: AttributeReport | None = None,
    regions: Sequence[np.ndarray] | None = None,
) -> Rationale:
    """Build the rationale from ``control`` (category -> unsafe probability) and ``evidence``
    (category -> {"model", "found", "verified", "depth", "completed", "fraction", "after",
    "mask"}, and ``"_output"`` -> {"verified", "fallback", "perturbations", "models", "protected",
    "second_opinion"}), the typed scan results: no sentence claims more than they show.

    ``attributes``, the detectors' report on the original image, adds the sentences of
    :func:`attribute_sentences`, placed relative to ``regions`` (default: the categories' masks in
    ``evidence``, as one obfuscated area per category)."""
    flagged = {c: p for c, p in control.items() if p >= 1 - threshold}
    grounded, extra = None, {}
    if attributes is not None:
        if regions is None:
            regions = [ev["mask"] for c, ev in evidence.items() if c in flagged and ev.get("mask") is not None]
        grounded = attribute_sentences(attributes, regions=regions, categories=list(flagged))
        extra = {"attributes": AttributeReportModel.from_report(attributes).model_dump(mode="json"), "questions": grounded.answers}
    if not flagged:
        text = "No category was flagged: " + ", ".join(f"{c} {p:.0%}" for c, p in control.items()) + "."
        if grounded is not None and grounded.sentences:
            text += " " + grounded.text
        return Rationale(
            text=text + " This statement is based on classifier scores, not a visual description.", backend="evidence",
            evidence=extra,
        )
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
    if grounded is not None:
        lines += grounded.sentences
    if "_output" in evidence:
        lines.append(_output_sentence(evidence["_output"]))
        if evidence["_output"].get("second_opinion"):
            lines.append(_opinion_sentence(evidence["_output"]["second_opinion"], evidence["_output"].get("perturbations", [])))
        summary["output"] = evidence["_output"]
        if evidence["_output"].get("protected"):
            lines.append(_protected_sentence(evidence["_output"]["protected"], evidence["_output"].get("fallback")))
    basis = "classifier scores, a counterfactual and attribute detectors" if grounded is not None else "classifier scores and a counterfactual"
    lines.append(f"This rationale is evidence-based ({basis}), not a visual description of the image.")
    return Rationale(text=" ".join(lines), backend="evidence", evidence={"control": control, "categories": summary, **extra})
