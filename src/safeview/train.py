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
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from . import nets
from .classify import CHECKPOINT_FORMAT, Classifier, Preprocess, read_torch_file
from .data import PARTS, LabelledImages, Pixels, Resize, decode_images, read_dataset, split_path, stratified_split, synth_origin, write_split
from .errors import ModelError, SafeViewError
from .inputs import file_sha256
from .metrics import TEMPERATURE_BOUNDS, classification_metrics, expected_calibration_error

STATE_FORMAT = "safeview-train-state"


# -- initial weights --------------------------------------------------------------------------


def state_path(checkpoint: str | Path) -> Path:
    """Where the resumable training state of a checkpoint is kept: ``model.resume.pt``."""
    return Path(checkpoint).with_suffix(".resume.pt")


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
    module: nn.Module, pixels: "Pixels", indices: np.ndarray, preprocess: Preprocess, *, batch_size: int, workers: int,
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
    module: nn.Module, pixels: Pixels, indices: np.ndarray, preprocess: Preprocess, *, batch_size: int, workers: int, device: torch.device
) -> torch.Tensor:
    module.eval()
    out = []
    batches = list(torch.from_numpy(indices).split(batch_size))
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for xb in pixels.batches(batches, workers=workers):
            out.append(module(_normalise(xb, preprocess).to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the T in :data:`TEMPERATURE_BOUNDS` minimising the
    validation NLL of softmax(logits / T). The NLL is convex in 1/T, so the optimum is where its
    derivative crosses zero (``scipy.optimize.brentq``), or the bound it falls beyond; never NaN,
    as an unbounded step search could give on small logits."""
    from scipy.optimize import brentq
    from scipy.special import softmax

    z = logits.detach().double().cpu().numpy()
    if not len(z):
        return 1.0
    target = z[np.arange(len(z)), labels.cpu().numpy()]

    def slope(beta: float) -> float:  # d NLL / d beta at beta = 1 / T
        return float(((softmax(beta * z, axis=1) * z).sum(axis=1) - target).mean())

    low, high = TEMPERATURE_BOUNDS
    if slope(1 / low) <= 0:  # still falling at the sharpest end (nothing to calibrate on)
        return low
    if slope(1 / high) >= 0:  # already rising at the flattest end
        return high
    return float(1 / brentq(slope, 1 / high, 1 / low, xtol=1e-12))


def _index(
    data: LabelledImages, resize: Resize, *, workers: int, cache: bool, emit: Callable[[str], None]
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


class TrainConfig(BaseModel):
    """How a classifier is trained, validated once when built (see :func:`train_classifier`):
    the paper's protocol (stratified 80/10/10 split, best validation epoch kept) with AdamW and a
    one-cycle schedule peaking at ``lr``, ``augment`` on the training batches, early stop after
    ``patience`` epochs without a better validation accuracy, ``init`` local weights to start from.
    Decoded images are cached in memory up to ``cache_limit_mb``, else decoded again each epoch in
    ``workers`` processes; ``device`` defaults to CUDA when present."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: str
    classes: tuple[str, ...] = ("safe", "unsafe")
    unsafe_classes: tuple[str, ...] = ("unsafe",)
    class_map: dict[str, str] = Field(default_factory=dict)
    arch: str = "small"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    init: Path | None = None
    image_size: int = Field(128, ge=8)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    augment: Literal["dihedral", "flip", "none"] = "dihedral"
    patience: int | None = Field(None, ge=1)
    seed: int = 0
    workers: int = Field(0, ge=0)
    device: str | None = None
    cache_limit_mb: int = Field(4096, ge=0)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        if value not in nets.ARCHITECTURES:
            raise ValueError(f"unknown architecture {value!r}; choose one of {', '.join(sorted(nets.ARCHITECTURES))}")
        return value

    @classmethod
    def build(cls, **settings: Any) -> "TrainConfig":
        """``TrainConfig(**settings)``, raising :class:`SafeViewError` with one line per problem."""
        from .config import describe

        try:
            return cls(**settings)
        except ValidationError as exc:
            raise SafeViewError(describe(exc, cls.model_fields)) from None

    def fingerprint(self, data_sha256: str, init_sha256: str | None, classes: Sequence[str]) -> dict[str, Any]:
        """What a resumed run must share with the saved one: the settings that shape training,
        the data and the starting weights."""
        fields = ("arch", "arch_kwargs", "unsafe_classes", "image_size", "epochs", "batch_size", "lr", "weight_decay", "augment", "seed")
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.model_dump(include=set(fields)).items()}
        return {**settings, "classes": list(classes), "data_sha256": data_sha256, "init_sha256": init_sha256}


@dataclass
class TrainState:
    """Where a run stands, saved after every epoch and on Ctrl-C so ``resume`` continues it:
    ``epoch`` epochs done and ``step`` batches into the next (in the shuffled ``order``), the
    running loss/correct/seen ``sums`` of that epoch, the best validation (accuracy, -loss) and
    its weights, the per-epoch ``history``, epochs without improvement (``stale``), seconds spent."""

    epoch: int = 0
    step: int = 0
    order: Any = None
    sums: list = field(default_factory=lambda: [0.0, 0, 0])
    best_score: list | None = None
    best_state: dict | None = None
    history: list = field(default_factory=list)
    stale: int = 0
    elapsed: float = 0.0


def train_classifier(
    data: str | Path,
    *,
    out: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: Callable[[TrainEvent], None] | None = None,
    **settings: Any,
) -> Classifier:
    """Train a classifier on ``data`` (see :func:`read_dataset`) as ``config`` says (without it,
    ``settings``, its fields as keyword arguments, build one) and save the best-validation
    checkpoint, temperature-calibrated and with test metrics in its metadata, to ``out``.

    Class-balanced loss weights; bfloat16 autocast on a GPU. The split goes to
    :func:`split_path`; a resumable :class:`TrainState` to :func:`state_path` after every epoch and
    on Ctrl-C (:class:`TrainingInterrupted`), which ``resume=True`` continues. Bad images are
    skipped and listed in the metadata. A model that cannot be trusted (one class only, chance
    decisions with a good ranking, the temperature at a bound; judged on the test split, else on
    validation) is still saved, with each warning emitted and kept in the metadata's ``warnings``.
    """
    t_start = time.perf_counter()
    if config is None:
        config = TrainConfig.build(**settings)
    elif settings:
        raise SafeViewError(f"give either a TrainConfig or settings, not both (got {', '.join(sorted(settings))})")
    out = Path(out)
    emit_event = progress or (lambda event: None)

    def emit(message: str) -> None:
        emit_event(TrainEvent("message", message))

    c = config
    dataset = read_dataset(data, class_map=c.class_map or None, classes=c.classes)
    unknown = sorted(set(c.unsafe_classes) - set(dataset.classes))
    if unknown or not c.unsafe_classes or set(c.unsafe_classes) >= set(dataset.classes):
        raise SafeViewError(f"unsafe classes {list(c.unsafe_classes)} must be a non-empty proper subset of the classes {dataset.classes}")
    dev = torch.device(c.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preprocess = Preprocess(resize=(c.image_size, c.image_size))
    resize = Resize(c.image_size, preprocess.interpolation)
    cache = len(dataset.paths) * 3 * c.image_size**2 <= c.cache_limit_mb * 2**20
    dataset, hashes, cached, skipped = _index(dataset, resize, workers=c.workers, cache=cache, emit=emit)
    y_all = np.asarray(dataset.labels)
    split = stratified_split(y_all, seed=c.seed, groups=hashes)
    if not len(split.val) or not len(split.train):
        raise SafeViewError(f"{dataset.root}: too few images to split 80/10/10; give at least three per class")
    write_split(split_path(out), dataset, hashes, split, seed=c.seed)
    data_hash = hashlib.sha256("\n".join(sorted(f"{h} {dataset.classes[y]}" for h, y in zip(hashes, y_all))).encode()).hexdigest()
    init_hash = file_sha256(c.init) if c.init is not None and Path(c.init).is_file() else None
    fingerprint = c.fingerprint(data_hash, init_hash, dataset.classes)

    pixels = Pixels(dataset.paths, resize, cached)
    y = torch.from_numpy(y_all).long()
    torch.manual_seed(c.seed)
    module = nets.build(c.arch, len(dataset.classes), **c.arch_kwargs)
    state_file = state_path(out)
    resuming = resume and state_file.is_file()
    if c.init is not None:
        loaded = load_init_weights(module, c.init)  # also when resuming: a wrong file is reported at once
        if not resuming:
            emit(f"initialised {loaded} tensors from {c.init}")
    elif not resuming:
        emit(f"training {c.arch} from scratch (no --init weights given)")
    module.to(dev)
    optimizer = torch.optim.AdamW(module.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    steps = math.ceil(len(split.train) / c.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=c.lr, total_steps=c.epochs * steps, pct_start=0.15)
    counts = np.bincount(y_all[split.train], minlength=len(dataset.classes))
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(dataset.classes), dtype=torch.float32, device=dev)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    generator = torch.Generator().manual_seed(c.seed)
    run = TrainState()
    if resuming:
        saved = torch.load(state_file, map_location="cpu", weights_only=True)
        if saved.get("format") != STATE_FORMAT:
            raise SafeViewError(f"{state_file}: not a SafeView training state; delete it or train without --resume")
        changed = sorted(k for k in fingerprint if saved["config"].get(k) != fingerprint[k])
        if changed:
            raise SafeViewError(f"{state_file}: was saved with other settings or data ({', '.join(changed)}); use the same ones or train without --resume")
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        run = TrainState(**{k: saved[k] for k in TrainState.__dataclass_fields__})
        emit(f"resuming from {state_file} at epoch {run.epoch + 1}, step {run.step}")
    elif resume:
        emit(f"no resumable state at {state_file}; starting a new run")

    def save_state() -> None:
        payload = {
            "format": STATE_FORMAT, "config": fingerprint, **asdict(run), "elapsed": run.elapsed + time.perf_counter() - t_start,
            "module": module.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        }
        tmp = state_file.with_name(state_file.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, state_file)

    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    with _StopOnInterrupt() as stop:
        while run.epoch < c.epochs and (c.patience is None or run.stale < c.patience):
            module.train()
            if run.step == 0:
                run.order = torch.from_numpy(split.train)[torch.randperm(len(split.train), generator=generator)]
                run.sums = [0.0, 0, 0]
            batches = list(run.order.split(c.batch_size))
            for xb in pixels.batches(batches[run.step :], workers=c.workers):
                idx = batches[run.step]
                xb = _normalise(_augment(xb, generator, c.augment), preprocess).to(dev)
                yb = y[idx].to(dev)
                with amp:
                    logits = module(xb).float()
                loss = loss_fn(logits, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                run.step += 1
                run.sums = [run.sums[0] + loss.item() * len(idx), run.sums[1] + int((logits.argmax(1) == yb).sum()), run.sums[2] + len(idx)]
                loss_sum, correct, seen = run.sums
                emit_event(TrainEvent("step", epoch=run.epoch + 1, epochs=c.epochs, step=run.step, steps=steps, loss=loss_sum / seen, accuracy=correct / seen))
                if stop.requested:
                    save_state()
                    raise TrainingInterrupted(state_file)
            if (run.epoch + 1) * steps < BN_RECALIBRATE_STEPS:  # few steps so far: exact statistics
                recalibrate_batchnorm(module, pixels, split.train, preprocess, batch_size=2 * c.batch_size, workers=c.workers, device=dev)
            val_logits = _logits(module, pixels, split.val, preprocess, batch_size=2 * c.batch_size, workers=c.workers, device=dev)
            val_acc = float((val_logits.argmax(1) == y[split.val]).float().mean())
            val_loss = float(nn.functional.cross_entropy(val_logits, y[split.val]))
            loss_sum, correct, seen = run.sums
            event = TrainEvent("epoch", epoch=run.epoch + 1, epochs=c.epochs, step=steps, steps=steps, loss=loss_sum / seen, accuracy=correct / seen, val_accuracy=val_acc, val_loss=val_loss)
            run.history.append({"epoch": event.epoch, "loss": event.loss, "accuracy": event.accuracy, "val_accuracy": val_acc, "val_loss": val_loss})
            if run.best_score is None or (val_acc, -val_loss) > tuple(run.best_score):
                run.best_score = [val_acc, -val_loss]
                run.best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                run.stale = 0
            else:
                run.stale += 1
            run.epoch, run.step, run.order = run.epoch + 1, 0, None
            emit_event(event)
            save_state()
            if stop.requested:
                raise TrainingInterrupted(state_file)
    if run.epoch < c.epochs:
        emit(f"early stop after epoch {run.epoch}: no better validation accuracy for {c.patience} epochs")

    module.load_state_dict(run.best_state)
    val_logits = _logits(module, pixels, split.val, preprocess, batch_size=2 * c.batch_size, workers=c.workers, device=dev)
    temperature = fit_temperature(val_logits, y[split.val])
    val_probs = torch.softmax(val_logits / temperature, 1).numpy()
    unsafe_idx = [dataset.classes.index(label) for label in c.unsafe_classes]
    test_metrics = None
    if len(split.test):
        test_logits = _logits(module, pixels, split.test, preprocess, batch_size=2 * c.batch_size, workers=c.workers, device=dev)
        report = classification_metrics(
            y_all[split.test], torch.softmax(test_logits / temperature, 1).numpy(), labels=dataset.classes, unsafe_indices=unsafe_idx,
            temperature=temperature,
        )
        test_metrics = {k: report[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "ece", "warnings")}
    else:  # no test split: judge the model on validation rather than not at all
        report = classification_metrics(y_all[split.val], val_probs, labels=dataset.classes, unsafe_indices=unsafe_idx, temperature=temperature)
    warnings = [f"{'test' if len(split.test) else 'validation'} split: {w}" for w in report["warnings"]]
    for warning in warnings:
        emit(f"warning: {warning}")
    module.cpu()
    classifier = Classifier.from_module(
        module, dataset.classes, list(c.unsafe_classes), name=out.stem, category=c.category, preprocess=preprocess, temperature=temperature,
        metadata={
            "arch": c.arch,
            "init": str(c.init) if c.init is not None else None,
            "init_sha256": init_hash,
            "trained_on": str(dataset.root),
            "data_origin": synth_origin(dataset.root),
            "data_sha256": data_hash,
            "split_file": split_path(out).name,
            "n_images": {name: int(len(idx)) for name, idx in zip(PARTS, (split.train, split.val, split.test))},
            "val_accuracy": run.best_score[0],
            "test_accuracy": test_metrics["accuracy"] if test_metrics else None,
            "test_metrics": test_metrics,
            "temperature": temperature,
            "warnings": warnings,
            "val_ece_uncalibrated": expected_calibration_error(torch.softmax(val_logits, 1).numpy(), y_all[split.val]),
            "val_ece": expected_calibration_error(val_probs, y_all[split.val]),
            "epochs": c.epochs,
            "epochs_run": run.epoch,
            "batch_size": c.batch_size,
            "lr": c.lr,
            "weight_decay": c.weight_decay,
            "augment": c.augment,
            "seed": c.seed,
            "history": run.history,
            "skipped": skipped,
            "train_seconds": run.elapsed + time.perf_counter() - t_start,
        },
    )
    classifier.save(out, arch=c.arch, arch_kwargs=c.arch_kwargs or None)
    state_file.unlink(missing_ok=True)
    return classifier
