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
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

SCHEMA_VERSION = "1.0"


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
    frames: int = Field(1, description="> 1 for animated images; only the first frame is scanned")


class CategoryResult(BaseModel):
    """One classifier's verdict on the image."""

    category: str
    model: str
    probabilities: dict[str, float] = Field(description="label -> probability")
    unsafe_probability: float
    unsafe: bool
    taxonomy: Taxonomy | None = None


class CounterfactualResult(BaseModel):
    """CSE for one unsafe category: the regions whose obfuscation flips that classifier."""

    category: str
    model: str
    attribution: str
    segmentation: str
    style: str
    found: bool
    regions: list[int] = Field(description="region ids of the final set, in the order they were masked")
    depth: int = Field(description="number of regions after pruning")
    greedy_depth: int = Field(description="number of regions of the greedy prefix before pruning")
    n_regions: int = Field(description="number of regions the segmentation produced")
    queries: int = Field(description="images classified during the search")
    obfuscated_fraction: float
    unsafe_probability_steps: list[float] = Field(description="unsafe probability of the original, then of each greedy prefix")
    unsafe_probability_after: float = Field(description="unsafe probability of the verified output")
    mask: RLE


class Rationale(BaseModel):
    text: str
    backend: str
    prompt: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)


class Versions(BaseModel):
    safeview: str
    torch: str | None = None
    models: dict[str, str] = Field(default_factory=dict, description="model name -> weights sha256")


class ScanResult(BaseModel):
    """Everything SafeView concluded about one image."""

    model_config = ConfigDict(json_schema_extra={"$id": "https://safeview.dev/schema/scan-result-1.0.json"})

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    input: InputInfo
    verdict: Literal["safe", "unsafe"]
    categories: list[CategoryResult]
    counterfactuals: list[CounterfactualResult] = Field(default_factory=list)
    mask: RLE | None = Field(None, description="union of all obfuscated regions (None when safe)")
    obfuscated_fraction: float = 0.0
    obfuscated_safe: bool | None = Field(
        None, description="the obfuscated output re-classified safe by every model (None when nothing was obfuscated)"
    )
    unsafe_probability_after: dict[str, float] = Field(
        default_factory=dict, description="category -> unsafe probability of the obfuscated output"
    )
    rationale: Rationale | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="stage -> seconds")
    versions: Versions
    outputs: dict[str, str] = Field(default_factory=dict, description="kind -> path of files written for this image")

    _artifacts: Any = PrivateAttr(default=None)

    @property
    def artifacts(self) -> Any:
        """The arrays behind the result (image, obfuscated output, attribution maps, segments),
        kept in memory only; never serialised."""
        return self._artifacts


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
