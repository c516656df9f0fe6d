"""The labelled data training and evaluation share: image folders and ``path,label`` manifests
read into :class:`LabelledImages`, parallel decoding, the paper's stratified 80/10/10 split
(deterministic for a seed, identical files grouped by sha256 so none leaks into two parts) and
its split file next to a checkpoint."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from .classify import _RESAMPLE
from .errors import ImageError, SafeViewError
from .images import IMAGE_SUFFIXES, load_image, load_image_info
from .inputs import MANIFEST_SUFFIXES, read_manifest

PARTS = ("train", "val", "test")
SPLIT_FORMAT = "safeview-split"


# -- the data ---------------------------------------------------------------------------------


@dataclass
class LabelledImages:
    """Image files and their classes: ``paths[i]`` belongs to ``classes[labels[i]]``."""

    root: Path
    paths: list[Path]
    labels: list[int]
    classes: list[str]


def parse_class_map(items: Sequence[str]) -> dict[str, str]:
    """The CLI's ``--map FOLDER=CLASS`` options as a dict, e.g. ``["sexy=safe", "porn=unsafe"]``."""
    mapping: dict[str, str] = {}
    for item in items:
        folder, sep, cls = item.partition("=")
        if not sep or not folder.strip() or not cls.strip():
            raise SafeViewError(f"--map {item!r}: write FOLDER=CLASS, e.g. --map neutral=safe")
        mapping[folder.strip()] = cls.strip()
    return mapping


def read_dataset(
    data: str | Path,
    *,
    class_map: Mapping[str, str] | None = None,
    classes: Sequence[str] = ("safe", "unsafe"),
) -> LabelledImages:
    """List the labelled images of ``data``: an image folder or a ``.csv``/``.jsonl``/``.parquet`` manifest.

    Folder: ``class_map`` maps sub-folder names to classes (default: the sub-folders named
    ``classes``, each its own class); image files are found recursively and other sub-folders are
    ignored. Manifest: rows of ``path,label`` (relative paths are relative to the manifest);
    ``class_map``, when given, maps every label to a class. Classes are sorted by name unless
    they come from ``classes``. Files are not decoded here.
    """
    root = Path(data).expanduser()
    if root.is_file() and root.suffix.lower() in MANIFEST_SUFFIXES:
        rows = [(row["path"], row["label"]) for row in read_manifest(root, ("path", "label"))]
        if class_map:
            unknown = sorted({label for _, label in rows} - set(class_map))
            if unknown:
                raise SafeViewError(f"{root}: labels {unknown} are not in --map; map every label to a class")
            rows = [(p, class_map[label]) for p, label in rows]
        names = sorted({label for _, label in rows})
        index = {c: i for i, c in enumerate(names)}
        paths = [Path(p) for p, _ in rows]
        result = LabelledImages(root.parent, paths, [index[label] for _, label in rows], names)
    elif root.is_dir():
        mapping = dict(class_map) if class_map else {c: c for c in classes}
        names = sorted(set(mapping.values())) if class_map else list(dict.fromkeys(classes))
        index = {c: i for i, c in enumerate(names)}
        paths, labels = [], []
        for folder, cls in mapping.items():
            sub = root / folder
            if not sub.is_dir():
                raise SafeViewError(f"{sub}: missing class folder; the data must hold the sub-folders {', '.join(mapping)} (or use --map)")
            for p in sorted(sub.rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(p)
                    labels.append(index[cls])
        result = LabelledImages(root, paths, labels, names)
    else:
        raise SafeViewError(f"{root}: not a folder or a .csv/.jsonl/.parquet manifest")
    if not result.paths:
        raise SafeViewError(f"{root}: no images found")
    return result


class _Files(TorchDataset):
    """Decode files (in DataLoader workers): item ``i`` -> (i, sha256, transform(image), None), or
    (i, None, None, error message) for a file that is not a usable image."""

    def __init__(self, paths: Sequence[Path], transform: Callable[[np.ndarray], Any]) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str | None, Any, str | None]:
        try:
            loaded = load_image_info(self.paths[i])
        except ImageError as exc:
            return i, None, None, str(exc)
        return i, loaded.sha256, self.transform(loaded.array), None


def _as_list(items: list) -> list:
    return items


def decode_images(
    paths: Sequence[Path], transform: Callable[[np.ndarray], Any], *, workers: int = 0, chunk: int = 16
) -> Iterator[tuple[int, str | None, Any, str | None]]:
    """Yield ``(index, sha256, transform(image), error)`` for every path, in order, decoding in
    ``workers`` processes (0: in this one). Bad files give ``error`` instead of raising."""
    loader = DataLoader(
        _Files(paths, transform), batch_size=chunk, num_workers=workers, collate_fn=_as_list, generator=torch.Generator()
    )
    for items in loader:
        yield from items


@dataclass(frozen=True)
class Resize:
    """uint8 H×W×3 -> uint8 3×size×size, resized exactly as :class:`Preprocess` resizes."""

    size: int
    interpolation: str = "bilinear"

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.shape[:2] != (self.size, self.size):
            image = np.asarray(Image.fromarray(image).resize((self.size, self.size), _RESAMPLE[self.interpolation]))
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class Pixels(TorchDataset):
    """The training images as uint8 tensors: from an in-memory cache, or decoded on demand."""

    def __init__(self, paths: Sequence[Path], resize: Resize, cache: torch.Tensor | None) -> None:
        self.paths, self.resize, self.cache = list(paths), resize, cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.cache[i] if self.cache is not None else self.resize(load_image(self.paths[i]))

    def batches(self, batches: Sequence[torch.Tensor], *, workers: int) -> Iterator[torch.Tensor]:
        if self.cache is not None:
            for b in batches:
                yield self.cache[b]
            return
        loader = DataLoader(
            self, batch_sampler=[b.tolist() for b in batches], num_workers=workers, collate_fn=torch.stack, generator=torch.Generator()
        )
        yield from loader


def synth_origin(root: str | Path) -> dict[str, Any] | None:
    """What ``safeview synth`` recorded about the images under ``root`` (its ``manifest.json``,
    in ``root`` or the folder above, as ``synth.generate`` writes it): the generator, recipe, seed,
    image size and the categories written, so a checkpoint can say what it was trained on beyond a
    local path. None for other data or an unreadable manifest."""
    for folder in (Path(root), Path(root).parent):
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("generator") == "safeview.synth":
            return {key: manifest.get(key) for key in ("generator", "recipe", "seed", "size", "written")}
    return None


# -- the split --------------------------------------------------------------------------------


@dataclass
class Split:
    """Indices of the train / validation / test parts of a dataset."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_split(
    labels: Sequence[int],
    *,
    seed: int = 0,
    fractions: tuple[float, float] = (0.8, 0.1),
    groups: Sequence[str] | None = None,
) -> Split:
    """Split indices train/val/test (80/10/10 by default) within each class, deterministically for
    a seed. Items with the same ``groups`` key (the file's sha256) always land in the same part, in
    the stratum of their most common label; a class with at least three groups gets at least one
    in validation and one in test."""
    labels = np.asarray(labels)
    keys = list(groups) if groups is not None else [str(i) for i in range(len(labels))]
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    ordered = sorted(members)  # independent of file order
    strata = np.asarray([np.bincount(labels[members[k]]).argmax() for k in ordered])
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == cls))
        n = len(idx)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
        n_test = max(1, n - round(fractions[0] * n) - n_val) if n >= 3 else 0
        n_train = n - n_val - n_test
        for part, chunk in zip(parts, (idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :])):
            part.extend(i for g in chunk for i in members[ordered[g]])
    return Split(*(np.sort(np.asarray(p, dtype=np.int64)) for p in parts))


def split_path(checkpoint: str | Path) -> Path:
    """Where the split of a checkpoint is written: ``model.safeview`` -> ``model.split.json``."""
    return Path(checkpoint).with_suffix(".split.json")


def write_split(path: Path, data: LabelledImages, hashes: Sequence[str], split: Split, *, seed: int) -> Path:
    """Write the split as JSON: ``parts`` (sha256 -> part) and ``items`` (path, label, sha256, part)."""
    part_of = {int(i): name for name, idx in zip(PARTS, (split.train, split.val, split.test)) for i in idx}
    items = [
        {"path": os.path.relpath(p, data.root), "label": data.classes[label], "sha256": h, "part": part_of[i]}
        for i, (p, label, h) in enumerate(zip(data.paths, data.labels, hashes))
    ]
    payload = {
        "format": SPLIT_FORMAT,
        "version": 1,
        "seed": seed,
        "data": str(data.root),
        "classes": data.classes,
        "counts": {name: int(len(idx)) for name, idx in zip(PARTS, (split.train, split.val, split.test))},
        "parts": {item["sha256"]: item["part"] for item in items},
        "items": items,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def read_split(path: str | Path) -> dict[str, str]:
    """sha256 -> part ("train", "val" or "test") of a split file written by :func:`write_split`."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SafeViewError(f"{path}: no such split file; it is written next to the checkpoint by `safeview train`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SafeViewError(f"{path}: not a SafeView split file (invalid JSON)") from None
    if not isinstance(payload, dict) or payload.get("format") != SPLIT_FORMAT:
        raise SafeViewError(f"{path}: not a SafeView split file (missing format marker)")
    return dict(payload["parts"])


