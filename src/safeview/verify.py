"""Robust verification of an obfuscated output: is it safe for every model, with a margin, and does
it stay safe on the copies a re-upload would make (JPEG re-encoding, rescaling, mirroring)?

The paper checks only that the searching classifier's decision flipped at 0.5. A flip that close to
the threshold is fragile — a JPEG round trip or a resize can bring the content back over it — so
SafeView calls an output safe only when every model that flagged the image puts its unsafe
probability at most ``1 - threshold - margin`` on the output and on each perturbed copy (the safe
side is then at least ``threshold + margin``; ``threshold`` is the paper's flip threshold on the safe
side, 0.5). The result records what was
checked, so a caller can say exactly what was and was not verified. :func:`source_window` says which
part of the image each copy shows, so what another judge (the attribute detectors' second opinion)
finds on a copy can be mapped back onto the image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from .classify import Classifier


def _jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _rescale(image: np.ndarray, factor: float = 0.5) -> np.ndarray:
    """Down to ``factor`` and back up: the detail a thumbnail or a re-upload at lower resolution keeps."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _mirror(image: np.ndarray) -> np.ndarray:
    return cv2.flip(np.ascontiguousarray(image), 1)  # the same pixels as image[:, ::-1], 41× faster (bench/hotpaths.py)


def _corner(shape: tuple[int, int], corner: int, side: float = 0.625) -> tuple[int, int, int, int]:
    """The box ``(x0, y0, x1, y1)``, end-exclusive, of one corner (0 top-left … 3 bottom-right) of
    ``side`` × an image of ``shape``."""
    h, w = shape
    ch, cw = max(1, round(h * side)), max(1, round(w * side))
    y, x = (0 if corner < 2 else h - ch), (0 if corner % 2 == 0 else w - cw)
    return x, y, x + cw, y + ch


def _crop(image: np.ndarray, corner: int) -> np.ndarray:
    """One corner of the image (:func:`_corner`), enlarged back to full size: a crop shows a
    classifier small content it overlooks in the whole frame."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _corner((h, w), corner)
    return cv2.resize(image[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)


#: name -> the copy a re-upload could produce (same size as the input, uint8 RGB)
PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg": _jpeg,
    "rescale": _rescale,
    "mirror": _mirror,
    **{f"crop{i}": (lambda image, i=i: _crop(image, i)) for i in range(4)},
}


def source_window(name: str, shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], bool]:
    """Where the copy ``name`` of an image of ``shape`` comes from: the box ``(x0, y0, x1, y1)``,
    end-exclusive, of the image that the copy shows stretched over its whole frame, and whether it
    shows it mirrored. What a detector finds on a copy is mapped back onto the image with it."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; choose from {', '.join(PERTURBATIONS)}")
    if name.startswith("crop"):
        return _corner(shape, int(name[4:])), False
    return (0, 0, shape[1], shape[0]), name == "mirror"


def check_perturbations(names: Sequence[str]) -> tuple[str, ...]:
    """Validate perturbation names once, where a configuration is built."""
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown perturbation(s) {unknown}; choose from {', '.join(PERTURBATIONS)}")
    return tuple(dict.fromkeys(names))


def perturbed_copies(image: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    """``image`` itself, then one copy per perturbation in ``names``."""
    return [image] + [PERTURBATIONS[n](image) for n in names]


@dataclass
class Verification:
    """What was checked and what every model said: ``unsafe_probabilities[model][copy]`` with copy
    ``"output"`` or a perturbation name; ``required[model]`` the highest unsafe probability that
    model may give any copy (``threshold`` is on the safe side, as in the paper's flip rule); ``passed`` only when every model met it on every copy."""

    models: list[str]
    threshold: float
    margin: float
    perturbations: list[str]
    unsafe_probabilities: dict[str, dict[str, float]] = field(default_factory=dict)
    required: dict[str, float] = field(default_factory=dict)
    passed: bool = False

    def failures(self) -> list[str]:
        """``model/copy`` for every check that failed: a probability that is not at most the
        bar (NaN included: a model that gave no number has not called the copy safe)."""
        return [
            f"{m}/{copy}"
            for m, copies in self.unsafe_probabilities.items()
            for copy, p in copies.items()
            if not p <= self.required[m]
        ]

    def as_dict(self) -> dict:
        return {
            "models": list(self.models),
            "threshold": self.threshold,
            "margin": self.margin,
            "perturbations": list(self.perturbations),
            "unsafe_probabilities": {m: dict(v) for m, v in self.unsafe_probabilities.items()},
            "required": dict(self.required),
            "passed": self.passed,
        }


def verify(
    classifiers: Sequence[Classifier],
    image: np.ndarray,
    *,
    threshold: float = 0.5,
    margin: float = 0.3,
    perturbations: Sequence[str] = tuple(PERTURBATIONS),
    flagged: Sequence[str] | None = None,
    known: Verification | None = None,
    early: bool = False,
    first: str | None = None,
) -> Verification:
    """Classify ``image`` and its perturbed copies with every model and decide whether it is safe
    to show.

    A model named in ``flagged`` (default: every model) must give an unsafe probability of at most
    ``1 - threshold - margin`` on every copy; a model that did not flag the original only has to
    keep calling it safe (at most ``1 - threshold``), since the margin is about content that was
    found and hidden. ``known``: an earlier verification
    of the same ``image`` with the same perturbations, whose models are not classified again.
    ``early``: stop at the first check that fails (for the candidates of a search, where only
    passing matters; such a failed result holds what was classified up to it): ``image`` itself
    first, then, on a CPU, where a batch costs what its images cost one by one, each copy in turn,
    ``first`` (the copy that failed the previous candidate, the likeliest to fail again) before the
    others; on an accelerator the copies go as one batch."""
    names = check_perturbations(perturbations)
    if not classifiers:
        raise ValueError("verification needs at least one model")
    reusable = known.unsafe_probabilities if known is not None and known.perturbations == list(names) else {}
    batch, copies = None, None  # the copies, made once for all models: as a batch, or one by one
    flagged = [c.name for c in classifiers] if flagged is None else list(flagged)
    result = Verification([c.name for c in classifiers], threshold, margin, list(names))
    for clf in classifiers:
        result.required[clf.name] = 1.0 - threshold - (margin if clf.name in flagged else 0.0)
        if clf.name in reusable:
            result.unsafe_probabilities[clf.name] = dict(reusable[clf.name])
            continue
        output = float(clf.unsafe_probability(clf.predict_proba(image[None]))[0])
        checked = result.unsafe_probabilities[clf.name] = {"output": output}
        if early and not output <= result.required[clf.name]:
            return result  # passed stays False: the copies cannot change that
        if early and str(clf.device).startswith("cpu"):
            copies = {} if copies is None else copies
            for name in sorted(names, key=lambda n: n != first):
                if name not in copies:
                    copies[name] = PERTURBATIONS[name](image)
                checked[name] = float(clf.unsafe_probability(clf.predict_proba(copies[name][None]))[0])
                if not checked[name] <= result.required[clf.name]:
                    return result
            continue
        if batch is None:
            batch = perturbed_copies(image, names)
        p = clf.unsafe_probability(clf.predict_proba(np.stack(batch[1:]))) if names else []
        checked.update({label: float(v) for label, v in zip(names, p)})
    result.passed = not result.failures()
    return result
