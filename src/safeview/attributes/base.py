"""The data the attribute layer produces: located attributes, what each detector did, the report
of one image, and the second opinion's verdicts on an obfuscated output. Plain frozen dataclasses
of arrays and numbers; their JSON form is in :mod:`safeview.schema` (``AttributeReportModel``, ``SecondOpinionModel``).
The boxes and masks of every attribute are in the pixels of the image the report is about; one
found on a re-upload copy of an output is mapped back onto the output and names that copy.

A detector that did not run (its package is not installed, a detector it needs did not run, or it
raised) leaves its attributes *not checked*: the report never turns "not looked for" into "absent".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

#: attribute names whose presence makes an image (or an obfuscated output) unsafe
UNSAFE_ATTRIBUTES = frozenset({"offensive_text"})

Status = Literal["ran", "not installed", "skipped", "failed"]


class NotInstalled(ImportError):
    """The package a detector wraps is not installed: its attributes are not checked."""


@dataclass(frozen=True)
class Attribute:
    """One attribute a detector saw: ``name`` (``text``, ``offensive_text``), the detector's
    ``score`` in [0, 1], where it lies — ``box`` ``(x0, y0, x1, y1)`` in pixels, end-exclusive, or a
    boolean ``mask`` of the image's size — the ``detector`` and its ``version``, for text the
    string read, and ``seen_on``, the re-upload copy (a :data:`safeview.verify.PERTURBATIONS`
    name) it was found on when not on the image itself (its box is then mapped back onto the image)."""

    name: str
    score: float
    detector: str
    version: str
    box: tuple[int, int, int, int] | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    text: str | None = None
    seen_on: str | None = None

    def __post_init__(self) -> None:
        if self.box is None and self.mask is None:
            raise ValueError(f"attribute {self.name!r} needs a box or a mask")

    @property
    def unsafe(self) -> bool:
        return self.name in UNSAFE_ATTRIBUTES

    def area(self, shape: tuple[int, int]) -> np.ndarray:
        """The pixels the attribute covers, as an ``shape`` boolean mask."""
        if self.mask is not None:
            return np.asarray(self.mask, bool)
        out = np.zeros(shape, bool)
        x0, y0, x1, y1 = self.box  # type: ignore[misc]
        out[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
        return out


@dataclass(frozen=True)
class DetectorRun:
    """What one detector did on one image: ``status`` ``ran``, ``not installed``, ``skipped`` (a
    detector it needs did not run) or ``failed`` (``detail`` says why), the attribute names it
    ``sees``, its ``version`` when it loaded, and the seconds it took."""

    name: str
    package: str
    status: Status
    sees: tuple[str, ...]
    version: str | None = None
    seconds: float = 0.0
    detail: str | None = None

    @property
    def checked(self) -> bool:
        return self.status == "ran"


@dataclass(frozen=True)
class AttributeReport:
    """The attributes found on one image and what every requested detector did."""

    shape: tuple[int, int]
    attributes: tuple[Attribute, ...]
    runs: tuple[DetectorRun, ...]

    def named(self, name: str) -> list[Attribute]:
        return [a for a in self.attributes if a.name == name]

    @property
    def unsafe(self) -> list[Attribute]:
        return [a for a in self.attributes if a.unsafe]

    @property
    def checked(self) -> set[str]:
        """Attribute names some detector that ran could have reported."""
        return {name for run in self.runs if run.checked for name in run.sees}

    @property
    def unchecked(self) -> dict[str, DetectorRun]:
        """Attribute name -> the run of a detector that would have seen it but did not run."""
        checked = self.checked
        return {name: run for run in self.runs if not run.checked for name in run.sees if name not in checked}

    def run(self, detector: str) -> DetectorRun | None:
        return next((r for r in self.runs if r.name == detector), None)


@dataclass(frozen=True)
class Verdict:
    """One detector's second opinion on an output and its copies: ``failed`` when it found an
    unsafe attribute on any of them (``found``), ``passed`` when it ran on all of them and found
    none, ``not checked`` when it found none but did not run on some (``detail`` says where)."""

    detector: str
    verdict: Literal["passed", "failed", "not checked"]
    found: tuple[Attribute, ...]
    detail: str | None = None


@dataclass(frozen=True)
class SecondOpinion:
    """The attribute detectors' verdicts on an obfuscated output: ``report`` on the output itself,
    ``copy_reports`` on the re-upload copies also checked (perturbation name -> report, attributes
    mapped back onto the output), and one verdict per detector covering all of them. ``passed``
    when none of them failed it; ``complete`` only when every requested detector ran on the output
    and on every copy, so a caller can tell "passed" from "passed, but nothing looked"."""

    report: AttributeReport
    verdicts: tuple[Verdict, ...]
    copy_reports: dict[str, AttributeReport] = field(default_factory=dict)

    @property
    def copies(self) -> tuple[str, ...]:
        """The re-upload copies checked besides the output."""
        return tuple(self.copy_reports)

    @property
    def passed(self) -> bool:
        return all(v.verdict != "failed" for v in self.verdicts)

    @property
    def complete(self) -> bool:
        return all(v.verdict != "not checked" for v in self.verdicts)

    def failures(self) -> list[str]:
        """``detector: "text" (score)`` for every unsafe attribute still found, with ``on <copy>``
        when it was found on a re-upload copy."""
        return [
            f'{v.detector}: "{a.text}" ({a.score:.2f})' + (f" on {a.seen_on}" if a.seen_on else "")
            for v in self.verdicts for a in v.found
        ]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of mask ``a`` that ``b`` covers (0 for an empty ``a``)."""
    n = int(a.sum())
    return float((a & b).sum()) / n if n else 0.0
