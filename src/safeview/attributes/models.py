"""The JSON form of the attribute layer (Pydantic), for the scan result and the review UI: every
attribute with where it lies, every detector with what it did, and the second opinion's verdicts.
Masks are COCO run-length encodings, as everywhere in :mod:`safeview.schema`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..schema import RLE
from .base import Attribute, AttributeReport, DetectorRun, SecondOpinion, Verdict


class AttributeModel(BaseModel):
    """One located attribute a detector saw."""

    name: str = Field(description="text, offensive_text")
    score: float = Field(description="the detector's confidence in [0, 1]")
    box: tuple[int, int, int, int] | None = Field(None, description="[x0, y0, x1, y1] in pixels, end-exclusive")
    mask: RLE | None = None
    detector: str
    version: str = Field(description="the detector's package, version and models")
    text: str | None = Field(None, description="for text: the string read")
    unsafe: bool = Field(description="its presence makes an image, or an obfuscated output, unsafe")

    @classmethod
    def from_attribute(cls, a: Attribute) -> AttributeModel:
        return cls(
            name=a.name, score=a.score, box=a.box, mask=RLE.from_mask(a.mask) if a.mask is not None else None,
            detector=a.detector, version=a.version, text=a.text, unsafe=a.unsafe,
        )


class DetectorRunModel(BaseModel):
    name: str
    package: str = Field(description="the PyPI distribution the detector needs")
    status: Literal["ran", "not installed", "skipped", "failed"] = Field(
        description="anything but 'ran' leaves the attributes it sees not checked"
    )
    sees: list[str] = Field(description="attribute names it can report")
    version: str | None = None
    seconds: float = 0.0
    detail: str | None = None

    @classmethod
    def from_run(cls, r: DetectorRun) -> DetectorRunModel:
        return cls(name=r.name, package=r.package, status=r.status, sees=list(r.sees), version=r.version,
                   seconds=r.seconds, detail=r.detail)


class AttributeReportModel(BaseModel):
    """The attributes found on one image and what every detector did."""

    attributes: list[AttributeModel]
    detectors: list[DetectorRunModel]
    unchecked: list[str] = Field(description="attribute names no detector that ran could see")

    @classmethod
    def from_report(cls, report: AttributeReport) -> AttributeReportModel:
        return cls(
            attributes=[AttributeModel.from_attribute(a) for a in report.attributes],
            detectors=[DetectorRunModel.from_run(r) for r in report.runs],
            unchecked=sorted(report.unchecked),
        )


class VerdictModel(BaseModel):
    detector: str
    verdict: Literal["passed", "failed", "not checked"]
    found: list[AttributeModel] = Field(description="the unsafe attributes it still found on the output")
    detail: str | None = None

    @classmethod
    def from_verdict(cls, v: Verdict) -> VerdictModel:
        return cls(detector=v.detector, verdict=v.verdict, found=[AttributeModel.from_attribute(a) for a in v.found],
                   detail=v.detail)


class SecondOpinionModel(BaseModel):
    """The attribute detectors' verdicts on an obfuscated output."""

    passed: bool = Field(description="no detector found an unsafe attribute")
    complete: bool = Field(description="every requested detector ran")
    verdicts: list[VerdictModel]
    report: AttributeReportModel

    @classmethod
    def from_opinion(cls, o: SecondOpinion) -> SecondOpinionModel:
        return cls(passed=o.passed, complete=o.complete, verdicts=[VerdictModel.from_verdict(v) for v in o.verdicts],
                   report=AttributeReportModel.from_report(o.report))
