"""Training per-category unsafe-image classifiers with the paper's protocol ("Pre-trained
classifiers": one binary ResNet-50 per category, an 80/10/10 split, the checkpoint with the best
validation accuracy kept, accuracy on the held-out test split reported). Probabilities are
calibrated by temperature scaling on the validation split, so the search's 0.5 threshold means
what it says.

The data is an image folder (one sub-folder per class; ``class_map`` merges several folders into
one class, as the paper merged "neutral" and "sexy" into safe) or a CSV/JSONL manifest of
``path,label``. The split is stratified by class, deterministic for a seed, groups identical files
(by sha256) so that no file leaks into two parts, and is written next to the checkpoint. Training
saves a resumable state after every epoch and on Ctrl-C; a resumed run gives the same weights as
an uninterrupted one, because the state holds every random-number generator.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from . import nets
from .classify import _RESAMPLE, CHECKPOINT_FORMAT, Classifier, Preprocess, read_torch_file
from .inputs import MANIFEST_SUFFIXES, file_sha256, read_manifest
from .errors import ImageError, ModelError, SafeViewError
from .metrics import classification_metrics, expected_calibration_error
from .images import IMAGE_SUFFIXES, load_image, load_image_info

PARTS = ("train", "val", "test")
SPLIT_FORMAT = "safeview-split"
STATE_FORMAT = "safeview-train-state"
AUGMENTATIONS = ("dihedral", "flip", "none")


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
class _Resize:
    """uint8 H×W×3 -> uint8 3×size×size, resized exactly as :class:`Preprocess` resizes."""

    size: int
    interpolation: str = "bilinear"

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.shape[:2] != (self.size, self.size):
            image = np.asarray(Image.fromarray(image).resize((self.size, self.size), _RESAMPLE[self.interpolation]))
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class _Pixels(TorchDataset):
    """The training images as uint8 tensors: from an in-memory cache, or decoded on demand."""

    def __init__(self, paths: Sequence[Path], resize: _Resize, cache: torch.Tensor | None) -> None:
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


def state_path(checkpoint: str | Path) -> Path:
    """Where the resumable training state of a checkpoint is kept: ``model.resume.pt``."""
    return Path(checkpoint).with_suffix(".resume.pt")


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


# -- initial weights --------------------------------------------------------------------------


def load_init_weights(module: nn.Module, path: str | Path) -> int:
    """Load a local state dict (e.g. torchvision's ImageNet ``resnet50-*.pth``, or a SafeView
    checkpoint) into ``module``; the final linear layer is kept fresh when its shape differs (a new
    number of classes). Anything else missing or mis-shaped is a :class:`ModelError`. Returns the
    number of tensors loaded."""
    path = Path(path).expanduser()
    obj = read_torch_file(
        path,
        missing="no such weights file; give a local .pth state dict (nothing is downloaded)",
        unreadable="not a readable PyTorch weights file ({error}); give a torchvision-style state dict (.pth)",
    )
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict", obj.get("model")), dict):
        obj = obj.get("state_dict", obj.get("model"))
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: does not hold a state dict of tensors; give a torchvision-style state dict (.pth)")
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
    own = module.state_dict()
    head = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)][-1:]
    matched = {k: v for k, v in obj.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in matched and not any(k.startswith(h + ".") for h in head)]
    if missing:
        raise ModelError(
            f"{path}: weights do not fit this architecture: {len(missing)} of {len(own)} tensors missing or of "
            f"another shape (first: {missing[0]}); give weights of the same architecture (--arch)"
        )
    own.update(matched)
    module.load_state_dict(own)
    return len(matched)


# -- training ---------------------------------------------------------------------------------


@dataclass
class TrainEvent:
    """What ``train_classifier`` reports to its ``progress`` callback: a ``message``, a finished
    ``step`` (running loss and accuracy of the epoch) or a finished ``epoch`` (with validation)."""

    kind: str
    message: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float = 0.0
    accuracy: float = 0.0
    val_accuracy: float | None = None
    val_loss: float | None = None

    def __str__(self) -> str:
        if self.kind == "message":
            return self.message
        text = f"epoch {self.epoch}/{self.epochs} step {self.step}/{self.steps} loss {self.loss:.4f} acc {self.accuracy:.3f}"
        if self.val_accuracy is not None:
            text += f" val acc {self.val_accuracy:.3f} val loss {self.val_loss:.4f}"
        return text


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving a resumable state at ``state``."""

    def __init__(self, state: Path) -> None:
        super().__init__(f"training interrupted; resumable state saved to {state}; run again with --resume")
        self.state = state


class _StopOnInterrupt:
    """While active, a first Ctrl-C only asks training to stop at the next step boundary (where the
    state is consistent and can be saved); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _augment(batch: torch.Tensor, generator: torch.Generator, mode: str) -> torch.Tensor:
    """``dihedral``: a random flip and multiple of 90° rotation per image (the eight symmetries of
    the square, which keep the class of a rotated, anywhere-placed object); ``flip``: a random
    horizontal flip; ``none``."""
    if mode == "none":
        return batch
    flips = torch.rand(len(batch), generator=generator) < 0.5
    batch = torch.where(flips[:, None, None, None], batch.flip(3), batch)
    if mode == "flip" or batch.shape[2] != batch.shape[3]:
        return batch
    turns = torch.randint(0, 4, (len(batch),), generator=generator)
    return torch.stack([torch.rot90(img, int(k), dims=(1, 2)) for img, k in zip(batch, turns)])


def _normalise(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """uint8 N×3×h×w -> the float input :meth:`Preprocess.array` gives for the same pixels."""
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return (batch.float() * preprocess.scale - mean) / std


#: below this many optimiser steps BatchNorm's running statistics (momentum 0.1) still carry much of
#: their initial values (0.9^50 ≈ 0.5 %), so they are recomputed over the training images
BN_RECALIBRATE_STEPS = 50


def recalibrate_batchnorm(
    module: nn.Module, pixels: "_Pixels", indices: np.ndarray, preprocess: Preprocess, *, batch_size: int, workers: int,
    device: torch.device,
) -> int:
    """Recompute every BatchNorm layer's running mean and variance as the exact average over the
    training images (momentum None), with no weight changed. After a few steps the running
    statistics are far from the data's, and a model then ranks well but decides at chance in eval
    mode. Returns how many BatchNorm layers were reset."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers or not len(indices):
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    with torch.no_grad():
        for xb in pixels.batches(list(torch.from_numpy(indices).split(batch_size)), workers=workers):
            module(_normalise(xb, preprocess).to(device))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return len(layers)


def _logits(
    module: nn.Module, pixels: _Pixels, indices: np.ndarray, preprocess: Preprocess, *, batch_size: int, workers: int, device: torch.device
) -> torch.Tensor:
    module.eval()
    out = []
    batches = list(torch.from_numpy(indices).split(batch_size))
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for xb in pixels.batches(batches, workers=workers):
            out.append(module(_normalise(xb, preprocess).to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising validation NLL of softmax(logits / T)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)
    loss_fn = nn.CrossEntropyLoss()

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def _index(
    data: LabelledImages, resize: _Resize, *, workers: int, cache: bool, emit: Callable[[str], None]
) -> tuple[LabelledImages, list[str], torch.Tensor | None, list[str]]:
    """Decode every file once: drop (and list) bad ones, hash the good ones, cache their pixels."""
    emit(f"reading {len(data.paths)} images from {data.root}")
    keep, hashes, arrays, skipped = [], [], [], []
    for i, sha, pixels, error in decode_images(data.paths, resize, workers=workers):
        if error is not None:
            skipped.append(error)
            continue
        keep.append(i)
        hashes.append(sha)
        if cache:
            arrays.append(pixels)
    for line in skipped:
        emit(f"skipped: {line}")
    if not keep:
        raise SafeViewError(f"{data.root}: none of the {len(data.paths)} files is a readable image")
    good = LabelledImages(data.root, [data.paths[i] for i in keep], [data.labels[i] for i in keep], data.classes)
    return good, hashes, (torch.stack(arrays) if cache else None), skipped


def train_classifier(
    data: str | Path,
    *,
    category: str,
    out: str | Path,
    classes: Sequence[str] = ("safe", "unsafe"),
    unsafe_classes: Sequence[str] = ("unsafe",),
    class_map: Mapping[str, str] | None = None,
    arch: str = "small",
    arch_kwargs: dict | None = None,
    init: str | Path | None = None,
    image_size: int = 128,
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    augment: str = "dihedral",
    patience: int | None = None,
    seed: int = 0,
    resume: bool = False,
    workers: int = 0,
    device: str | None = None,
    cache_limit_mb: int = 4096,
    progress: Callable[[TrainEvent], None] | None = None,
) -> Classifier:
    """Train a classifier on ``data`` (see :func:`read_dataset`) and save the best-validation
    checkpoint, temperature-calibrated and with test metrics in its metadata, to ``out``.

    AdamW with a one-cycle (warm-up then cosine) schedule peaking at ``lr``; class-balanced loss
    weights; ``augment`` on the training batches; bfloat16 autocast on a GPU (``device``: default
    CUDA when present). ``init`` loads local weights (:func:`load_init_weights`), else training
    starts from scratch. ``patience`` stops after that many epochs without a better validation
    accuracy. Decoded images are cached in memory up to ``cache_limit_mb``, else decoded again each
    epoch in ``workers`` processes. The split goes to :func:`split_path`; a resumable state to
    :func:`state_path` after every epoch and on Ctrl-C (:class:`TrainingInterrupted`), which
    ``resume=True`` continues. Bad images are skipped and listed in the metadata.
    """
    t_start = time.perf_counter()
    out = Path(out)
    emit_event = progress or (lambda event: None)

    def emit(message: str) -> None:
        emit_event(TrainEvent("message", message))

    if augment not in AUGMENTATIONS:
        raise SafeViewError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
    if epochs < 1 or batch_size < 1 or image_size < 8 or (patience is not None and patience < 1):
        raise SafeViewError("epochs, batch size and patience must be at least 1 and the image size at least 8")
    dataset = read_dataset(data, class_map=class_map, classes=classes)
    unknown = sorted(set(unsafe_classes) - set(dataset.classes))
    if unknown or not unsafe_classes or set(unsafe_classes) >= set(dataset.classes):
        raise SafeViewError(f"unsafe classes {list(unsafe_classes)} must be a non-empty proper subset of the classes {dataset.classes}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preprocess = Preprocess(resize=(image_size, image_size))
    resize = _Resize(image_size, preprocess.interpolation)
    cache = len(dataset.paths) * 3 * image_size**2 <= cache_limit_mb * 2**20
    dataset, hashes, cached, skipped = _index(dataset, resize, workers=workers, cache=cache, emit=emit)
    y_all = np.asarray(dataset.labels)
    split = stratified_split(y_all, seed=seed, groups=hashes)
    if not len(split.val) or not len(split.train):
        raise SafeViewError(f"{dataset.root}: too few images to split 80/10/10; give at least three per class")
    write_split(split_path(out), dataset, hashes, split, seed=seed)
    data_hash = hashlib.sha256("\n".join(sorted(f"{h} {dataset.classes[y]}" for h, y in zip(hashes, y_all))).encode()).hexdigest()
    init_hash = file_sha256(init) if init is not None and Path(init).is_file() else None
    config = {
        "arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "classes": dataset.classes, "unsafe_classes": list(unsafe_classes),
        "image_size": image_size, "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
        "augment": augment, "seed": seed, "data_sha256": data_hash, "init_sha256": init_hash,
    }

    pixels = _Pixels(dataset.paths, resize, cached)
    y = torch.from_numpy(y_all).long()
    torch.manual_seed(seed)
    module = nets.build(arch, len(dataset.classes), **(arch_kwargs or {}))
    state_file = state_path(out)
    resuming = resume and state_file.is_file()
    if init is not None:
        loaded = load_init_weights(module, init)  # also when resuming: a wrong file is reported at once
        if not resuming:
            emit(f"initialised {loaded} tensors from {init}")
    elif not resuming:
        emit(f"training {arch} from scratch (no --init weights given)")
    module.to(dev)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    steps = math.ceil(len(split.train) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.15)
    counts = np.bincount(y_all[split.train], minlength=len(dataset.classes))
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(dataset.classes), dtype=torch.float32, device=dev)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    generator = torch.Generator().manual_seed(seed)
    run: dict[str, Any] = {
        "epoch": 0, "step": 0, "order": None, "sums": [0.0, 0, 0], "best_score": None, "best_state": None,
        "history": [], "stale": 0, "elapsed": 0.0,
    }
    if resuming:
        saved = torch.load(state_file, map_location="cpu", weights_only=True)
        if saved.get("format") != STATE_FORMAT:
            raise SafeViewError(f"{state_file}: not a SafeView training state; delete it or train without --resume")
        changed = sorted(k for k in config if saved["config"].get(k) != config[k])
        if changed:
            raise SafeViewError(f"{state_file}: was saved with other settings or data ({', '.join(changed)}); use the same ones or train without --resume")
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        run = {k: saved[k] for k in run}
        emit(f"resuming from {state_file} at epoch {run['epoch'] + 1}, step {run['step']}")
    elif resume:
        emit(f"no resumable state at {state_file}; starting a new run")

    def save_state() -> None:
        payload = {
            "format": STATE_FORMAT, "config": config, **run, "elapsed": run["elapsed"] + time.perf_counter() - t_start,
            "module": module.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        }
        tmp = state_file.with_name(state_file.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, state_file)

    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    with _StopOnInterrupt() as stop:
        while run["epoch"] < epochs and (patience is None or run["stale"] < patience):
            module.train()
            if run["step"] == 0:
                run["order"] = torch.from_numpy(split.train)[torch.randperm(len(split.train), generator=generator)]
                run["sums"] = [0.0, 0, 0]
            batches = list(run["order"].split(batch_size))
            for xb in pixels.batches(batches[run["step"] :], workers=workers):
                idx = batches[run["step"]]
                xb = _normalise(_augment(xb, generator, augment), preprocess).to(dev)
                yb = y[idx].to(dev)
                with amp:
                    logits = module(xb).float()
                loss = loss_fn(logits, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                run["step"] += 1
                run["sums"] = [run["sums"][0] + loss.item() * len(idx), run["sums"][1] + int((logits.argmax(1) == yb).sum()), run["sums"][2] + len(idx)]
                loss_sum, correct, seen = run["sums"]
                emit_event(TrainEvent("step", epoch=run["epoch"] + 1, epochs=epochs, step=run["step"], steps=steps, loss=loss_sum / seen, accuracy=correct / seen))
                if stop.requested:
                    save_state()
                    raise TrainingInterrupted(state_file)
            if (run["epoch"] + 1) * steps < BN_RECALIBRATE_STEPS:  # few steps so far: exact statistics
                recalibrate_batchnorm(module, pixels, split.train, preprocess, batch_size=2 * batch_size, workers=workers, device=dev)
            val_logits = _logits(module, pixels, split.val, preprocess, batch_size=2 * batch_size, workers=workers, device=dev)
            val_acc = float((val_logits.argmax(1) == y[split.val]).float().mean())
            val_loss = float(nn.functional.cross_entropy(val_logits, y[split.val]))
            loss_sum, correct, seen = run["sums"]
            event = TrainEvent("epoch", epoch=run["epoch"] + 1, epochs=epochs, step=steps, steps=steps, loss=loss_sum / seen, accuracy=correct / seen, val_accuracy=val_acc, val_loss=val_loss)
            run["history"].append({"epoch": event.epoch, "loss": event.loss, "accuracy": event.accuracy, "val_accuracy": val_acc, "val_loss": val_loss})
            if run["best_score"] is None or (val_acc, -val_loss) > tuple(run["best_score"]):
                run["best_score"] = [val_acc, -val_loss]
                run["best_state"] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                run["stale"] = 0
            else:
                run["stale"] += 1
            run["epoch"], run["step"], run["order"] = run["epoch"] + 1, 0, None
            emit_event(event)
            save_state()
            if stop.requested:
                raise TrainingInterrupted(state_file)
    if run["epoch"] < epochs:
        emit(f"early stop after epoch {run['epoch']}: no better validation accuracy for {patience} epochs")

    module.load_state_dict(run["best_state"])
    val_logits = _logits(module, pixels, split.val, preprocess, batch_size=2 * batch_size, workers=workers, device=dev)
    temperature = fit_temperature(val_logits, y[split.val])
    val_probs = torch.softmax(val_logits / temperature, 1).numpy()
    unsafe_idx = [dataset.classes.index(c) for c in unsafe_classes]
    test_metrics = None
    if len(split.test):
        test_logits = _logits(module, pixels, split.test, preprocess, batch_size=2 * batch_size, workers=workers, device=dev)
        report = classification_metrics(y_all[split.test], torch.softmax(test_logits / temperature, 1).numpy(), labels=dataset.classes, unsafe_indices=unsafe_idx)
        test_metrics = {k: report[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "ece", "warnings")}
        for warning in report["warnings"]:
            emit(f"warning: {warning}")
    module.cpu()
    classifier = Classifier.from_module(
        module, dataset.classes, list(unsafe_classes), name=out.stem, category=category, preprocess=preprocess, temperature=temperature,
        metadata={
            "arch": arch,
            "init": str(init) if init is not None else None,
            "init_sha256": init_hash,
            "trained_on": str(dataset.root),
            "data_sha256": data_hash,
            "split_file": split_path(out).name,
            "n_images": {name: int(len(idx)) for name, idx in zip(PARTS, (split.train, split.val, split.test))},
            "val_accuracy": run["best_score"][0],
            "test_accuracy": test_metrics["accuracy"] if test_metrics else None,
            "test_metrics": test_metrics,
            "temperature": temperature,
            "val_ece_uncalibrated": expected_calibration_error(torch.softmax(val_logits, 1).numpy(), y_all[split.val]),
            "val_ece": expected_calibration_error(val_probs, y_all[split.val]),
            "epochs": epochs,
            "epochs_run": run["epoch"],
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "augment": augment,
            "seed": seed,
            "history": run["history"],
            "skipped": skipped,
            "train_seconds": run["elapsed"] + time.perf_counter() - t_start,
        },
    )
    classifier.save(out, arch=arch, arch_kwargs=arch_kwargs)
    state_file.unlink(missing_ok=True)
    return classifier
