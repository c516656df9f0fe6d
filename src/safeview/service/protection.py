"""Protected regions as clients give them to the service (issue 16): boxes and polygons only —
a request never names a file the server would read, so ``mask`` paths are refused — bounded in
number and size, with finite coordinates inside the image, validated in the request and stored
in a canonical form whose digest is part of the deduplication key."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Annotated, Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ..protect import ProtectError, ProtectSpec, ProtectedRegion, region_from_spec

#: at most this many protected regions per scan (the submitter's and the reviewers' together)
MAX_REGIONS = 64
#: at most this many points per polygon
MAX_POINTS = 1000
#: at most this many mask pixels over all regions of a scan (each region is a full-size boolean
#: mask in the worker: 64 regions on a 40 MP image would hold 2.5 GB), 256 MiB
MAX_MASK_PIXELS = 1 << 28
#: the longest ``protect`` form field accepted, in characters (64 polygons of 1000 points fit)
MAX_FIELD_CHARS = 1_000_000

Coordinate = Annotated[float, Field(allow_inf_nan=False)]


class ClientRegion(BaseModel):
    """One protected region from a client: exactly one of ``box`` (``[x0, y0, x1, y1]`` in pixels
    of the image as decoded, EXIF orientation applied; ends exclusive) or ``polygon`` (``[[x, y],
    …]``, 3 to 1000 points), and a ``label`` (``face``, ``tattoo``…)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = None
    polygon: list[tuple[Coordinate, Coordinate]] | None = Field(None, min_length=3, max_length=MAX_POINTS)
    label: str = Field("protected", min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")

    @model_validator(mode="before")
    @classmethod
    def _no_files(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mask" in data:
            raise ValueError("a mask file cannot be given to the service (it never reads a path a request names); give a box or a polygon")
        if isinstance(data, dict) and isinstance(data.get("polygon"), list) and len(data["polygon"]) > MAX_POINTS:
            raise ValueError(f"a polygon has at most {MAX_POINTS} points (got {len(data['polygon'])})")
        return data

    @model_validator(mode="after")
    def _one_shape(self) -> "ClientRegion":
        given = [name for name in ("box", "polygon") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of box or polygon (got {', '.join(given) or 'none'})")
        if self.box is not None and not (self.box[2] > self.box[0] and self.box[3] > self.box[1]):
            raise ValueError(f"box {[_num(v) for v in self.box]} must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        return self

    def points(self) -> list[tuple[float, float]]:
        if self.box is not None:
            return [(self.box[0], self.box[1]), (self.box[2], self.box[3])]
        return list(self.polygon or ())

    def canonical(self) -> dict:
        """The region as stored: ``{"box"|"polygon": …, "label": …}``, numbers as given."""
        shape = {"box": [_num(v) for v in self.box]} if self.box is not None else {"polygon": [[_num(x), _num(y)] for x, y in self.polygon or ()]}
        return {**shape, "label": self.label}


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


_REGIONS = TypeAdapter(list[ClientRegion])


class ProtectionError(ValueError):
    """A client's protection that cannot be used: one line, naming the field."""


def _first_error(exc: ValidationError, field: str) -> str:
    first = exc.errors()[0]
    where = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def parse_regions(items: Any, field: str = "protect") -> list[ClientRegion]:
    """``items`` (a decoded JSON list) as client regions; :class:`ProtectionError` names what is wrong."""
    if not isinstance(items, list):
        raise ProtectionError(f'{field}: give a JSON list of regions, such as [{{"box": [x0, y0, x1, y1], "label": "face"}}]')
    if len(items) > MAX_REGIONS:
        raise ProtectionError(f"{field}: at most {MAX_REGIONS} protected regions (got {len(items)})")
    try:
        return _REGIONS.validate_python(items)
    except ValidationError as exc:
        raise ProtectionError(_first_error(exc, field)) from None


def parse_field(text: str | None) -> list[ClientRegion]:
    """The ``protect`` form field (JSON) of a submission; empty or absent: no regions."""
    if text is None or not text.strip():
        return []
    if len(text) > MAX_FIELD_CHARS:
        raise ProtectionError(f"protect: at most {MAX_FIELD_CHARS} characters (got {len(text)})")
    try:
        items = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtectionError(f"protect: not JSON ({exc})") from None
    return parse_regions(items)


def parse_region(item: Any, field: str = "region") -> ClientRegion:
    try:
        return ClientRegion.model_validate(item)
    except ValidationError as exc:
        raise ProtectionError(_first_error(exc, field)) from None


def check_inside(regions: Sequence[ClientRegion], width: int, height: int, field: str = "protect", start: int = 0) -> None:
    """Every coordinate within the ``width`` × ``height`` image (0 ≤ x ≤ width, 0 ≤ y ≤ height)."""
    for i, region in enumerate(regions, start):
        if not all(0 <= x <= width and 0 <= y <= height for x, y in region.points()):
            shape = "box" if region.box is not None else "polygon"
            raise ProtectionError(f"{field}[{i}].{shape}: lies outside the {width}×{height} image; "
                                  f"coordinates are pixels with 0 ≤ x ≤ {width} and 0 ≤ y ≤ {height}")


def check_budget(count: int, width: int, height: int, field: str = "protect") -> None:
    """At most :data:`MAX_MASK_PIXELS` mask pixels for ``count`` regions on the image."""
    most = max(1, MAX_MASK_PIXELS // max(1, width * height))
    if count > most:
        raise ProtectionError(f"{field}: at most {most} protected regions on a {width}×{height} image "
                              f"(each is a full-size mask while the image is scanned; got {count})")


def oriented_size(data: bytes, width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` of the image as decoded: swapped when its EXIF orientation turns it a
    quarter (read from the header only, nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            orientation = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - no readable EXIF: as the header says
        return width, height
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def dumps(specs: Sequence[dict]) -> str:
    return json.dumps(list(specs), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def protect_key(specs: Sequence[dict], faces: bool) -> str:
    """The deduplication digest of a submission's protection; "" for none (no regions, no faces)."""
    if not specs and not faces:
        return ""
    return hashlib.sha256(json.dumps({"protect": list(specs), "protect_faces": bool(faces)}, sort_keys=True).encode()).hexdigest()


def job_regions(user: Sequence[dict], reviewer: Sequence[dict], shape: tuple[int, int]) -> list[ProtectedRegion]:
    """A job's protected regions on an image of ``shape`` (H, W): the submitter's (source
    ``user``), then the reviewers' (source ``reviewer``). Stored specs are checked again: a mask
    path is refused here too, so no path ever reaches the library from the database."""
    regions = []
    for source, items in (("user", user), ("reviewer", reviewer)):
        for i, item in enumerate(items):
            try:
                ClientRegion.model_validate(item)
            except ValidationError as exc:
                raise ProtectError(f"stored protected region {source}[{i}] is invalid: {_first_error(exc, 'protect')}") from None
            regions.append(region_from_spec(ProtectSpec.model_validate(item), shape, where=f"{source}[{i}]", source=source))
    return regions
