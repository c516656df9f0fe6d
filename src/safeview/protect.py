"""Protected regions: the safe evidence an investigator needs to keep visible (a face to estimate
age, a tattoo, an identifier, a landmark), which obfuscation avoids and the result reports.

The paper's second goal is that obfuscation leaves the safe rest of the image untouched; a mask
grown to hide the whole of the content would otherwise grow into neighbouring evidence. Regions
come from the user (a boolean mask, boxes or polygons, or a ``--protect`` JSON file mapping each
image to them) or from the built-in face detector (:mod:`safeview.faces`). CSE cuts its
segmentation at their boundary (:func:`cut_segments`), searches and completes on the unprotected
rest first (a protected piece joins the completion only as the content going on inside it,
:func:`protected_twins`), and obfuscates a protected piece only when the content cannot be hidden otherwise
(:func:`safeview.counterfactual.cse`); :func:`kept_shares` measures what stayed bit-identical.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import SafeViewError

#: where a protected region came from
SOURCES = ("user", "faces", "reviewer")


class ProtectError(SafeViewError):
    """A protection spec or ``--protect`` file that cannot be used (one line: what and where)."""


@dataclass(frozen=True)
class ProtectedRegion:
    """One region to keep visible: a full-resolution boolean ``mask``, its ``label`` (``face``,
    ``tattoo``…), its ``source`` (:data:`SOURCES`) and, for a detection, the detector and its score."""

    mask: np.ndarray
    label: str = "protected"
    source: str = "user"
    detector: str | None = None
    score: float | None = None

    @property
    def box(self) -> list[int]:
        """``[x0, y0, x1, y1]`` (exclusive ends) around the mask; empty masks give zeros."""
        ys, xs = np.nonzero(self.mask)
        if not len(ys):
            return [0, 0, 0, 0]
        return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


class ProtectSpec(BaseModel):
    """One protected region as users write it: exactly one of ``box`` (``[x0, y0, x1, y1]`` in
    pixels, ends exclusive), ``polygon`` (``[[x, y], …]``, at least 3 points) or ``mask`` (a PNG
    path, non-zero = protected, relative to the ``--protect`` file), and an optional ``label``.
    Coordinates must be finite: JSON's ``1e999`` reads as infinity, which no pixel rounds to."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    box: tuple[float, float, float, float] | None = None
    polygon: list[tuple[float, float]] | None = Field(None, min_length=3)
    mask: str | None = None
    label: str = Field("protected", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_shape(self) -> "ProtectSpec":
        given = [name for name in ("box", "polygon", "mask") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of box, polygon or mask (got {', '.join(given) or 'none'})")
        if self.box is not None and not (self.box[2] > self.box[0] and self.box[3] > self.box[1]):
            raise ValueError(f"box {list(self.box)} must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
        return self


def _spec(item: Any, where: str) -> ProtectSpec:
    if isinstance(item, ProtectSpec):
        return item
    try:
        return ProtectSpec.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"])
        raise ProtectError(f"{where}: bad protected region{f' ({at})' if at else ''}: {first['msg']}") from None


def region_from_spec(spec: ProtectSpec | Mapping[str, Any], shape: tuple[int, int], *, where: str = "protect",
                     source: str = "user") -> ProtectedRegion:
    """The :class:`ProtectedRegion` of ``spec`` on an image of ``shape`` (H, W); boxes and polygons
    are clipped to the image, a mask file must have the image's size (its transparent pixels,
    composited onto black, protect nothing: a mask is often painted on a transparent layer)."""
    import cv2

    spec = _spec(spec, where)
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    if spec.box is not None:
        x0, y0, x1, y1 = spec.box
        xs, ys = np.clip([round(x0), round(x1)], 0, w), np.clip([round(y0), round(y1)], 0, h)
        mask[ys[0]:ys[1], xs[0]:xs[1]] = 1
    elif spec.polygon is not None:
        cv2.fillPoly(mask, [np.round(np.asarray(spec.polygon, np.float64)).astype(np.int32)], 1)
    else:
        from .images import load_image_info

        path = Path(spec.mask)
        try:
            array = load_image_info(path, background=(0, 0, 0)).array
        except SafeViewError as exc:
            raise ProtectError(f"{where}: protected mask {path}: {exc}") from None
        if array.shape[:2] != (h, w):
            raise ProtectError(f"{where}: protected mask {path} is {array.shape[1]}×{array.shape[0]}, "
                               f"the image is {w}×{h}; give a mask of the image's size")
        mask = (array.max(axis=2) > 0).astype(np.uint8)
    return ProtectedRegion(mask.astype(bool), label=spec.label, source=source)


def resolve(items: Iterable[ProtectedRegion | ProtectSpec | Mapping[str, Any] | np.ndarray] | None,
            shape: tuple[int, int], *, where: str = "protect") -> list[ProtectedRegion]:
    """Every protected region of one image from what a caller gave: :class:`ProtectedRegion` s,
    specs (dicts or :class:`ProtectSpec`) or boolean masks of the image's ``shape``."""
    regions = []
    for item in items or ():
        if isinstance(item, ProtectedRegion):
            region = item
        elif isinstance(item, np.ndarray):
            if item.shape != tuple(shape):
                raise ProtectError(f"{where}: a protected mask of shape {item.shape} for an image of shape {tuple(shape)}")
            region = ProtectedRegion(item.astype(bool))
        else:
            region = region_from_spec(item, shape, where=where)
        if region.mask.shape != tuple(shape):
            raise ProtectError(f"{where}: a protected region of shape {region.mask.shape} for an image of shape {tuple(shape)}")
        regions.append(region)
    return regions


def union(regions: Sequence[ProtectedRegion], shape: tuple[int, int]) -> np.ndarray:
    """The pixels any of ``regions`` protects."""
    out = np.zeros(shape, bool)
    for region in regions:
        out |= region.mask
    return out


def working_protection(protected: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``protected`` on a working copy of ``shape``: every working pixel that covers any protected
    full-resolution pixel is protected (the conservative side: the search never touches them)."""
    if protected.shape == tuple(shape):
        return protected
    import cv2

    return cv2.resize(protected.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA) > 0


def cut_segments(segments: np.ndarray, protected: np.ndarray) -> np.ndarray:
    """``segments`` with every region split at the protected boundary and relabelled ``0..K-1``, so
    that no region straddles it: each region lies wholly inside or wholly outside ``protected``."""
    if not protected.any():
        return segments
    _, labels = np.unique(segments.astype(np.int64) * 2 + protected, return_inverse=True)
    return labels.reshape(segments.shape).astype(segments.dtype if segments.dtype.kind in "iu" else np.int32)


def protected_twins(
    image: np.ndarray, segments: np.ndarray, cut: np.ndarray, protected: np.ndarray, *, seam_delta: float
) -> dict[int, int | None]:
    """The regions of ``cut`` (:func:`cut_segments` of ``segments``) that lie inside ``protected``,
    each with its *twin*: the unprotected region cut from the same region of ``segments`` when the
    image continues across their seam (the median CIE Lab distance between the pixels facing each
    other across it is at most ``seam_delta``), else None. A region the boundary cut in two
    straddled it in a segmentation that follows edges, and an unbroken seam says the object goes
    on inside (a stand-in under a protected box); a protected tile's own edge breaks it."""
    if not protected.any():
        return {}
    import cv2

    k = int(cut.max()) + 1
    inside = np.zeros(k, bool)
    inside[cut[protected]] = True
    lab = cv2.cvtColor(np.asarray(image, np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    seams: dict[int, list[np.ndarray]] = {}
    for near, far in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                      ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        across = (protected[near] != protected[far]) & (segments[near] == segments[far])
        if not across.any():
            continue
        owner = np.where(protected[near], cut[near], cut[far])[across]
        distance = np.linalg.norm(lab[near][across] - lab[far][across], axis=1)
        for r in np.unique(owner).tolist():
            seams.setdefault(r, []).append(distance[owner == r])
    origin = np.zeros(k, np.int64)
    origin[cut.ravel()] = segments.ravel()
    outside = {int(origin[r]): r for r in np.flatnonzero(~inside).tolist()}
    return {r: outside[int(origin[r])] if r in seams and float(np.median(np.concatenate(seams[r]))) <= seam_delta else None
            for r in np.flatnonzero(inside).tolist()}


def kept_shares(original: np.ndarray, output: np.ndarray | None, regions: Sequence[ProtectedRegion]) -> list[float]:
    """For each region, the share of its pixels left bit-identical (all channels) in ``output``
    (1.0 for every region when there is no output)."""
    if output is None:
        return [1.0 for _ in regions]
    same = np.all(np.asarray(original) == np.asarray(output), axis=-1)
    return [float(same[r.mask].mean()) if r.mask.any() else 1.0 for r in regions]


def _absolute(spec: ProtectSpec, base: Path) -> ProtectSpec:
    """``spec`` with a mask path relative to ``base`` made absolute (a protect file's masks lie beside it)."""
    if spec.mask is None or Path(spec.mask).is_absolute():
        return spec
    return spec.model_copy(update={"mask": str(base / spec.mask)})


class ProtectFile:
    """A ``--protect`` file: JSON mapping each image (its path as given, a path relative to the
    file, or its bare file name) to a list of :class:`ProtectSpec` s. Validated when read."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProtectError(f"{self.path}: no such protect file; give a JSON file mapping images to regions") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtectError(f"{self.path}: not a readable JSON protect file ({exc}); see the README, "
                               "'Protected regions'") from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ProtectError(f"{self.path}: a protect file maps each image path to a list of regions "
                               '({"photo.jpg": [{"box": [x0, y0, x1, y1]}]})')
        base = self.path.parent.resolve()
        self.specs = {
            str(key): [_absolute(_spec(item, f"{self.path}: {key}[{i}]"), base) for i, item in enumerate(items)]
            for key, items in data.items()
        }

    def specs_for(self, image: str | os.PathLike) -> list[ProtectSpec]:
        """The regions listed for ``image`` (mask paths made absolute): by its path as given, its
        resolved path, its path relative to the file, or its file name (in that order)."""
        key = self._key(image)
        return self.specs[key] if key is not None else []

    def _key(self, image: str | os.PathLike) -> str | None:
        image = Path(image)
        resolved = image.resolve()
        keys = [str(image), str(resolved)]
        if resolved.is_relative_to(self.path.parent.resolve()):
            keys.append(str(resolved.relative_to(self.path.parent.resolve())))
        keys.append(image.name)
        return next((key for key in keys if key in self.specs), None)

    def unused(self, images: Iterable[str | os.PathLike]) -> list[str]:
        """Keys that none of ``images`` matches (likely a typo in the file)."""
        return sorted(set(self.specs) - {self._key(image) for image in images})
