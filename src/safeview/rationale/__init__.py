"""Rationales: why an image was flagged, in words tied to its unsafe attributes (the paper's
ConditionalVLM). Backends share one interface, ``rationale(image, control, evidence) -> Rationale``:

``evidence`` (default, no weights)
    a structured statement of verdicts, confidences and the counterfactual regions; given
    ``attributes`` (:func:`safeview.attributes.detect` on the original), also the attributes found,
    where they lie relative to the obfuscated ``regions``, and what was not checked.
``instructblip``
    CIIT on a local InstructBLIP checkpoint (:mod:`.ciit`); options ``vlm`` (directory),
    ``guidance`` (w, 1.0; 0 is the paper's ablation), ``prior`` (True), ``device``, ``quantize``,
    ``max_new_tokens``, ``num_beams``.
``openai``
    any OpenAI-compatible chat endpoint (:mod:`.openai_compat`); options ``base_url``, ``model``,
    ``api_key``, ``timeout``, ``retries``, ``json_output``.

Both VLM backends ask ``question`` (default: the first generic moderator question) through the
conditioned prompt built by the prior (:mod:`.prompts`) from the control code; option ``prompts``
names another templates file.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from ..attributes import AttributeReport, AttributeReportModel
from ..schema import Rationale
from .control import ControlCode, as_control, control_code
from .evidence import ATTRIBUTES, evidence_rationale
from .prompts import DEFAULT_PROMPTS, attribute_match, conditioned_prompt, load_templates

BACKENDS = ("evidence", "instructblip", "openai")
#: the options each backend accepts
OPTIONS = {
    "evidence": (),
    "instructblip": ("vlm", "guidance", "prior", "device", "quantize", "max_new_tokens", "num_beams", "prompts"),
    "openai": ("base_url", "model", "api_key", "timeout", "retries", "json_output", "max_tokens", "prompts"),
}


@lru_cache(maxsize=2)
def _ciit(path: str, device: str, quantize: str | None):
    from .ciit import ConditionalBlip

    return ConditionalBlip.load(path, device=device, quantize=quantize)


def rationale(
    image: np.ndarray,
    control: ControlCode | Mapping[str, float],
    evidence: dict[str, Any],
    *,
    backend: str = "evidence",
    threshold: float = 0.5,
    question: str | None = None,
    attributes: AttributeReport | None = None,
    regions: Sequence[np.ndarray] | None = None,
    **options: Any,
) -> Rationale:
    """Explain the verdict on ``image`` given the control code (category -> unsafe probability)
    and the counterfactual evidence, with the chosen backend and its ``options``. ``attributes``
    (the detectors' report on the original image) grounds the evidence rationale and goes to the
    VLM backends' recorded evidence; ``regions`` are the obfuscated regions' masks in order."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown rationale backend {backend!r}; available: {', '.join(BACKENDS)}")
    unknown = set(options) - set(OPTIONS[backend])
    if unknown:
        raise ValueError(f"the {backend} backend takes no option {', '.join(sorted(unknown))}; it takes: {', '.join(OPTIONS[backend]) or 'none'}")
    code = as_control(control, threshold=threshold)
    if backend == "evidence":
        return evidence_rationale(
            image.shape[:2], code.probabilities, evidence, threshold=threshold, attributes=attributes, regions=regions
        )
    templates = load_templates(options.get("prompts") or DEFAULT_PROMPTS)
    question = question or templates.generic[0]
    summary: dict[str, Any] = {"control": code.probabilities, "flagged": list(code.flagged), "question": question}
    if evidence:  # the counterfactual, without its masks (they are in the scan result)
        summary["categories"] = {c: {k: v for k, v in ev.items() if k != "mask"} for c, ev in evidence.items()}
    if attributes is not None:
        summary["attributes"] = AttributeReportModel.from_report(attributes).model_dump(mode="json")
    if backend == "instructblip":
        if not options.get("vlm"):
            raise ValueError("the instructblip backend needs vlm=PATH (a local checkpoint directory)")
        ciit = _ciit(str(options["vlm"]), options.get("device", "cpu"), options.get("quantize"))
        guidance = float(options.get("guidance", 1.0))
        prompt = conditioned_prompt(code, question, templates=templates) if options.get("prior", True) else question
        text = ciit.generate(
            [image], [prompt], [code], guidance=guidance,
            max_new_tokens=int(options.get("max_new_tokens", 128)), num_beams=int(options.get("num_beams", 1)),
        )[0]
        return Rationale(text=text, backend=backend, prompt=prompt, evidence={**summary, "guidance": guidance})
    from .openai_compat import chat

    if not options.get("base_url") or not options.get("model"):
        raise ValueError("the openai backend needs base_url=... and model=...")
    prompt = conditioned_prompt(code, question, templates=templates)
    reply = chat(image, prompt, **{k: v for k, v in options.items() if k != "prompts"})
    extra = {"llavaguard": reply["json"]} if reply["json"] else {}
    return Rationale(text=reply["text"], backend=backend, prompt=prompt, evidence={**summary, **extra})


__all__ = ["ATTRIBUTES", "BACKENDS", "ControlCode", "attribute_match", "conditioned_prompt", "control_code", "rationale"]
