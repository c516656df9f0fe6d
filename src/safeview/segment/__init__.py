"""Subobject region partitioning (paper, "Subobject Region Partitioning using Adaptive Segmentation").

``segment(image, method, attribution=None, **params)`` dispatches to one module per method and
normalises every result the same way: labels ``0..K-1`` (int32) where each region is one
4-connected component, so that a region can be masked, scored (Def. 1) and obfuscated on its own.
Methods are imported lazily: a user who never asks for BASS never pays for compiling it.
"""

from __future__ import annotations

import inspect
from importlib import import_module
from typing import Any, Callable, Mapping

import numpy as np

#: method name -> "module:function" inside ``safeview.segment``; each function takes
#: ``(image, attribution=None, **params)`` and returns an (H, W) integer label image.
METHODS: dict[str, str] = {
    "slic": "slic:slic",
    "felzenszwalb": "felzenszwalb:felzenszwalb",
    "watershed": "watershed:watershed",
    "bass": "bass:bass",
    "sam": "sam:sam",
}


def _resolve(method: str) -> Callable[..., np.ndarray]:
    if method not in METHODS:
        raise ValueError(f"unknown segmentation method {method!r}; choose one of {sorted(METHODS)}")
    module_name, function_name = METHODS[method].split(":")
    try:
        module = import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as exc:  # e.g. a method whose module is not installed in this build
        if exc.name != f"{__name__}.{module_name}":
            raise
        raise ValueError(f"segmentation method {method!r} is not available in this build") from exc
    return getattr(module, function_name)


def check_params(method: str, params: Mapping[str, Any]) -> None:
    """Refuse parameters ``method`` does not take, when a configuration is built rather than on
    the first image (the method's module is only imported when there are parameters to check)."""
    if not params:
        return
    accepted = inspect.signature(_resolve(method)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return
    known = [name for name in accepted if name not in ("image", "attribution")]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"segmentation {method!r} takes no parameter {', '.join(unknown)}; it takes: {', '.join(known) or 'none'}")


def connected_labels(labels: np.ndarray) -> np.ndarray:
    """Split every label into its 4-connected components and renumber them ``0..K-1`` (int32)."""
    from skimage.measure import label as cc_label

    components = cc_label(np.asarray(labels).astype(np.int64) + 1, connectivity=1, background=0)
    return (components - 1).astype(np.int32)


def region_contacts(segments: np.ndarray) -> list[dict[int, int]]:
    """For each region ``0..K-1``, its neighbours (4-neighbourhood) and how many pixel edges it
    shares with each: the share of a region's boundary that one neighbour holds says whether that
    neighbour surrounds it."""
    k = int(segments.max()) + 1
    seg = segments.astype(np.int64)
    a = np.concatenate([seg[:, :-1].ravel(), seg[:-1].ravel()])
    b = np.concatenate([seg[:, 1:].ravel(), seg[1:].ravel()])
    differ = a != b
    codes = np.concatenate([a[differ] * k + b[differ], b[differ] * k + a[differ]])
    unique, counts = np.unique(codes, return_counts=True)
    contacts: list[dict[int, int]] = [{} for _ in range(k)]
    for code, c in zip(unique.tolist(), counts.tolist()):
        contacts[code // k][code % k] = c
    return contacts


def segment(
    image: np.ndarray,
    method: str = "bass",
    attribution: np.ndarray | None = None,
    **params,
) -> np.ndarray:
    """Partition ``image`` (H×W×3 uint8) into 4-connected regions labelled ``0..K-1``.

    ``attribution`` (H×W in [0, 1]) is passed to methods that use it (BASS); the others ignore it.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"segment() needs an H×W×3 image, got shape {image.shape}")
    if attribution is not None and attribution.shape != image.shape[:2]:
        raise ValueError(f"attribution shape {attribution.shape} does not match image {image.shape[:2]}")
    labels = _resolve(method)(image, attribution=attribution, **params)
    return connected_labels(labels)
