"""The machine-readable results of SafeView (Pydantic models; the JSON Schema in ``docs/`` is
generated from them with ``python -m safeview.schema docs/scan-result.schema.json``).

Masks are COCO run-length encodings (``pycocotools``), so any COCO tool can decode them. Each
category is also mapped onto the common moderation taxonomies (AWS Rekognition, Azure Content
Safety, LlavaGuard) so results slot into existing pipelines; the mapping is an approximation of
meaning, documented in the README.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

if TYPE_CHECKING:
    from .attributes.base import Attribute, AttributeReport, DetectorRun, SecondOpinion, Verdict

SCHEMA_VERSION = "2.2"


class Taxonomy(BaseModel):
    """Where a SafeView category sits in other moderation taxonomies."""

    aws_rekognition: list[str]
    azure_content_safety: str
    llavaguard: str


#: category -> its place in the common cloud taxonomies (see README, "Categories and taxonomies")
TAXONOMY: dict[str, Taxonomy] = {
    "sexual": Taxonomy(
        aws_rekognition=["Explicit", "Explicit Nudity"], azure_content_safety="Sexual", llavaguard="O3: Sexual Content"
    ),
    "cyberbullying": Taxonomy(
        aws_rekognition=["Rude Gestures", "Hate Symbols"],
        azure_content_safety="Hate",
        llavaguard="O1: Hate, Humiliation, Harassment",
    ),
    "self_harm": Taxonomy(
        aws_rekognition=["Violence", "Visually Disturbing"], azure_content_safety="SelfHarm", llavaguard="O7: Self-Harm"
    ),
}

#: the unsafe categories SafeView knows (the paper's three), in one place for every module
CATEGORIES: tuple[str, ...] = tuple(TAXONOMY)


class RLE(BaseModel):
    """A COCO compressed run-length encoding of a boolean mask (column-major, as COCO defines)."""

    size: tuple[int, int] = Field(description="[height, width]")
    counts: str

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "RLE":
        from pycocotools import mask as mask_utils

        encoded = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
        return cls(size=tuple(int(v) for v in encoded["size"]), counts=encoded["counts"].decode("ascii"))

    def to_mask(self) -> np.ndarray:
        from pycocotools import mask as mask_utils

        return mask_utils.decode({"size": list(self.size), "counts": self.counts.encode("ascii")}).astype(bool)


class InputInfo(BaseModel):
    path: str | None = None
    sha256: str
    width: int
    height: int
    format: str | None = None
    mode: str | None = Field(None, description="the original Pillow mode, before conversion to RGB")
    frames: int = Field(1, description="> 1 for animated images")
    frame: int = Field(0, description="the frame scanned (0-based): the first, or of an animated image's sampled frames the one the models found most unsafe")
    frames_checked: int = Field(1, description="frames the models classified: an animated image's first and up to 63 more, evenly spaced")
    frame_gap: int = Field(0, description="the longest run of consecutive frames none of which the models classified (0: every frame was): "
                                          "content shown for more frames in a row than this was seen")
    windows: int = Field(0, description="windows along the long side an elongated image (over 1.5:1), or an elongated content_box, was also "
                                        "classified, searched and verified in (each model's probabilities are those of the most unsafe view); "
                                        "0 for others")
    content_box: tuple[int, int, int, int] | None = Field(
        None, description="[x0, y0, x1, y1], end-exclusive: the box inside the image's uniform borders (a flat canvas, letterbox bars) "
                          "it was also classified, searched and verified in, so content framed small on a canvas is seen; None without such borders")
    tiles: int = Field(0, description="with --tiles, the overlapping square tiles of half the short side the image was also classified, "
                                      "searched and verified in, so content filling a small part of it (one cell of a collage) is seen; "
                                      "0 without --tiles or when a tile would be under 64 px")
    rendering: Literal["onto white", "onto black", "alpha dropped"] | None = Field(
        None, description="for an image with transparent pixels, classified composited onto white, onto black and with its alpha "
                          "dropped: the rendering scanned when it was not the default (composited onto white), because the models found it "
                          "the most unsafe")


class CategoryResult(BaseModel):
    """One classifier's verdict on the image."""

    category: str
    model: str = Field(description="the model's name, as given to --models")
    probabilities: dict[Literal["safe", "unsafe"], float] = Field(
        description="the one vocabulary of every model: probability of the safe side and of the unsafe side"
    )
    labels: dict[str, float] = Field(description="the model's own labels (e.g. sfw/nsfw) -> probability")
    seen_in: tuple[int, int, int, int] | None = Field(
        None, description="[x0, y0, x1, y1], end-exclusive: the view these probabilities are of, when it was not the whole image but the "
                          "content box, a window or a tile the model found more unsafe (a verdict reached only in a zoomed-in tile deserves "
                          "a reviewer's second look); None for the whole image")
    unsafe_labels: list[str] = Field(description="which of the model's own labels count as unsafe")
    unsafe_probability: float
    unsafe: bool
    taxonomy: Taxonomy | None = None


class CounterfactualResult(BaseModel):
    """CSE for one unsafe category: the regions whose obfuscation hides the content from that
    classifier (``hide`` mode: verified with a margin and on re-upload copies)."""

    category: str
    model: str
    mode: Literal["hide", "paper", "minimal"] = Field(description="hide: margin, completion, robust verification; "
                                                      "paper: the greedy prefix at the first flip; minimal: that prefix pruned")
    attribution: str
    segmentation: str
    style: str
    found: bool = Field(description="the search reached its stop level (hide: 1 - threshold - margin; otherwise the flip) within budget")
    verified: bool = Field(description="the output of this category's CSE passed verification")
    regions: list[int] = Field(description="region ids obfuscated: the search's, in the order masked, then the completed ones")
    completed: list[int] = Field(default_factory=list, description="region ids added by evidence completion (hide mode)")
    depth: int = Field(description="number of regions obfuscated (search and completion; after pruning in minimal mode)")
    greedy_depth: int = Field(description="number of regions of the greedy prefix the search stopped at")
    n_regions: int = Field(description="number of regions the segmentation produced (in hide mode counting the pieces large "
                                       "regions were cut into before completion; the ids in regions and completed refer to these)")
    queries: int = Field(description="images classified during the search")
    obfuscated_fraction: float
    unsafe_probability_steps: list[float] = Field(description="unsafe probability of the original, then of each greedy prefix classified, "
                                                  "shortest first (in hide mode a search round short of the margin after 4 prefixes "
                                                  "classifies its longest next, and lists only that one when it misses too)")
    unsafe_probability_after: float = Field(description="this model's unsafe probability of this category's output")
    mask: RLE


class VerificationResult(BaseModel):
    """What was checked before an output was called safe (``safeview.verify``)."""

    models: list[str]
    threshold: float = Field(description="the flip threshold on the safe side")
    margin: float = Field(description="models that flagged the image must give at most 1 - threshold - margin")
    perturbations: list[str] = Field(description="re-upload copies checked besides the output itself")
    unsafe_probabilities: dict[str, dict[str, float]] = Field(description="model -> copy ('output' or a perturbation) -> unsafe probability")
    required: dict[str, float] = Field(description="model -> the highest unsafe probability it may give any copy")
    passed: bool = Field(description="the classifiers' part of the check")
    second_opinion: "SecondOpinionModel | None" = Field(
        None, description="what the attribute detectors (safeview.attributes) saw on the output; None when none was asked for"
    )


# -- attributes (safeview.attributes): what real detectors saw, and their second opinion ----------


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
    seen_on: str | None = Field(None, description="the re-upload copy (a verification perturbation) it was found on, its box "
                             "mapped back onto the image; null: found on the image itself")

    @classmethod
    def from_attribute(cls, a: Attribute) -> AttributeModel:
        return cls(
            name=a.name, score=a.score, box=a.box, mask=RLE.from_mask(a.mask) if a.mask is not None else None,
            detector=a.detector, version=a.version, text=a.text, unsafe=a.unsafe, seen_on=a.seen_on,
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
    found: list[AttributeModel] = Field(description="the unsafe attributes it still found on the output or a copy")
    detail: str | None = None

    @classmethod
    def from_verdict(cls, v: Verdict) -> VerdictModel:
        return cls(detector=v.detector, verdict=v.verdict, found=[AttributeModel.from_attribute(a) for a in v.found],
                   detail=v.detail)


class SecondOpinionModel(BaseModel):
    """The attribute detectors' verdicts on an obfuscated output and the re-upload copies checked."""

    passed: bool = Field(description="no detector found an unsafe attribute on the output or a copy")
    complete: bool = Field(description="every requested detector ran on the output and on every copy")
    copies: list[str] = Field(default_factory=list, description="re-upload copies (verification perturbations) the "
                              "detectors also ran on, besides the output; verification may check more copies with the models")
    verdicts: list[VerdictModel]
    report: AttributeReportModel = Field(description="what the detectors saw on the output itself")

    @classmethod
    def from_opinion(cls, o: SecondOpinion) -> SecondOpinionModel:
        return cls(passed=o.passed, complete=o.complete, copies=list(o.copies),
                   verdicts=[VerdictModel.from_verdict(v) for v in o.verdicts],
                   report=AttributeReportModel.from_report(o.report))


class Rationale(BaseModel):
    text: str
    backend: str
    prompt: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class ProtectedRegionModel(BaseModel):
    """A protected region (:mod:`safeview.protect`) and how much of it the output left as it was."""

    label: str = Field(description="what it is: 'face', or the user's label ('protected' by default)")
    source: Literal["user", "faces", "reviewer"] = Field(description="who marked it: the caller, the face detector "
                                                         "(--protect-faces), or a reviewer")
    detector: str | None = Field(None, description="the detector that found it (source 'faces')")
    box: list[int] = Field(description="[x0, y0, x1, y1] around it, in pixels, ends exclusive")
    pixels: int = Field(description="its number of pixels")
    kept: float = Field(description="share of its pixels left bit-identical in the output (1.0: untouched)")


class Versions(BaseModel):
    safeview: str
    torch: str | None = None
    models: dict[str, str] = Field(default_factory=dict, description="model name -> weights sha256")


class ScanResult(BaseModel):
    """Everything SafeView concluded about one image."""

    model_config = ConfigDict(json_schema_extra={"$id": "https://safeview.dev/schema/scan-result-2.2.json"})

    schema_version: Literal["2.2"] = SCHEMA_VERSION
    input: InputInfo
    verdict: Literal["safe", "unsafe"]
    categories: list[CategoryResult]
    attributes: "AttributeReportModel | None" = Field(
        None, description="what real detectors saw on the original (flagged images only): located attributes, and "
        "every detector's status; attributes of a detector that did not run are not checked, never absent"
    )
    counterfactuals: list[CounterfactualResult] = Field(default_factory=list)
    protected: list[ProtectedRegionModel] = Field(
        default_factory=list, description="regions kept visible (flagged images only): the caller's, detected faces, "
        "a reviewer's; each with the share left bit-identical (below 1.0 only where the content could not be hidden "
        "otherwise, or the 'full' fallback applied)"
    )
    mask: RLE | None = Field(None, description="union of all obfuscated regions (None when safe)")
    obfuscated_fraction: float = 0.0
    obfuscated_safe: bool | None = Field(
        None,
        description="true only when the output passed verification (every model, with the margin, also on the re-upload "
        "copies); false when it did not and the fallback was applied; None for a safe image",
    )
    output_status: Literal["verified", "not verified"] | None = Field(
        None, description="plain words for obfuscated_safe: 'verified' or 'not verified' (None for a safe image)"
    )
    fallback: Literal["full", "prefix", "none"] | None = Field(
        None, description="the fallback applied because no verified output existed (None when verified or safe)"
    )
    verification: VerificationResult | None = Field(None, description="the checks run on the final output")
    unsafe_probability_after: dict[str, float] = Field(
        default_factory=dict, description="category -> unsafe probability of the obfuscated output"
    )
    rationale: Rationale | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="stage -> seconds")
    versions: Versions
    outputs: dict[str, str] = Field(default_factory=dict, description="kind -> path of files written for this image")

    _artifacts: Any = PrivateAttr(default=None)

    @property
    def output_suffix(self) -> str:
        """How an obfuscated output file of this result ends: ``safe.png`` only when it passed
        verification, ``not-verified.png`` otherwise, so no file name calls an unverified image safe."""
        return "safe.png" if self.obfuscated_safe else "not-verified.png"

    @property
    def artifacts(self) -> Any:
        """The arrays behind the result (image, obfuscated output, attribution maps, segments),
        kept in memory only; never serialised."""
        return self._artifacts


class ErrorRecord(BaseModel):
    """The record of an input that could not be scanned (a line of ``results.jsonl`` beside the
    :class:`ScanResult` lines; a row's ``error``/``error_type`` in the batch table)."""

    path: str = Field(description="the input as given or found")
    error: str = Field(description="one line: what went wrong and what to do")
    error_type: str = Field(description="ImageError (the bytes are not a usable image), ModelError, InputError, "
                            "or the name of an unexpected exception")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`ScanResult`."""
    return ScanResult.model_json_schema()


if __name__ == "__main__":  # python -m safeview.schema [OUT]
    text = json.dumps(json_schema(), indent=2) + "\n"
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
