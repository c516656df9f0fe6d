"""Training per-category unsafe-image classifiers with the paper's protocol: a stratified 80/10/10
split, the checkpoint with the best validation accuracy kept, accuracy on the held-out test split
recorded. Probabilities are calibrated by temperature scaling on the validation split, so the
search's 0.5 threshold means what it says.

The data is an image folder: one sub-folder per class (``safe/``, ``unsafe/``), as the synthetic
benchmark writes it.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import nets
from .classify import Classifier, Preprocess
from .errors import ImageError, SafeViewError
from .images import IMAGE_SUFFIXES, load_image_info


@dataclass
class Split:
    """Indices of the train / validation / test parts of a dataset."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_split(labels: Sequence[int], *, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> Split:
    """Split indices 80/10/10 within each class (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        for part, chunk in zip(parts, (idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :])):
            part.extend(chunk.tolist())
    return Split(*(np.sort(np.asarray(p, dtype=np.int64)) for p in parts))


def scan_folder(root: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Image files under ``root/<class>/`` (recursively) and their class indices."""
    paths, labels = [], []
    for i, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            raise SafeViewError(f"{folder}: missing class folder; the data must hold one sub-folder per class ({', '.join(classes)})")
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(i)
    if not paths:
        raise SafeViewError(f"{root}: no images found in {', '.join(classes)}")
    return paths, labels


def _load_arrays(paths: Sequence[Path], preprocess: Preprocess, skipped: list[str]) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode and preprocess every image once (datasets for the demo models fit in memory)."""
    arrays, keep, hashes = [], [], []
    for i, p in enumerate(paths):
        try:
            loaded = load_image_info(p)
        except ImageError as exc:
            skipped.append(str(exc))
            continue
        arrays.append(preprocess.array(loaded.array))
        keep.append(i)
        hashes.append(loaded.sha256)
    return np.stack(arrays).astype(np.float32), keep, hashes


def _evaluate(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> tuple[float, torch.Tensor]:
    module.eval()
    logits = []
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            logits.append(module(x[s : s + batch]))
    out = torch.cat(logits)
    return float((out.argmax(1) == y).float().mean()), out


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
    return float(log_t.exp().clamp(0.05, 20.0))


def train_classifier(
    data: str | Path,
    *,
    category: str,
    out: str | Path,
    classes: Sequence[str] = ("safe", "unsafe"),
    unsafe_classes: Sequence[str] = ("unsafe",),
    arch: str = "small",
    arch_kwargs: dict | None = None,
    image_size: int = 128,
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Classifier:
    """Train a ``classes`` classifier on an image folder and save the best-validation checkpoint
    (calibrated, with test accuracy in its metadata) to ``out``."""
    torch.manual_seed(seed)
    root = Path(data)
    preprocess = Preprocess(resize=(image_size, image_size))
    paths, labels = scan_folder(root, classes)
    skipped: list[str] = []
    x_all, keep, hashes = _load_arrays(paths, preprocess, skipped)
    y_all = np.asarray(labels)[keep]
    split = stratified_split(y_all, seed=seed)
    x = torch.from_numpy(x_all)
    y = torch.from_numpy(y_all).long()
    module = nets.build(arch, len(classes), **(arch_kwargs or {}))
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(split.train) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    counts = np.bincount(y_all[split.train], minlength=len(classes))
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes), dtype=torch.float32))
    generator = torch.Generator().manual_seed(seed)
    best_acc, best_state, history = -1.0, None, []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        module.train()
        order = torch.from_numpy(split.train)[torch.randperm(len(split.train), generator=generator)]
        total = 0.0
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)  # horizontal flips
            loss = loss_fn(module(xb), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        val_acc, _ = _evaluate(module, x[split.val], y[split.val])
        history.append({"epoch": epoch + 1, "loss": total / len(order), "val_accuracy": val_acc})
        if progress:
            progress(f"epoch {epoch + 1}/{epochs} loss {total / len(order):.4f} val acc {val_acc:.3f}")
        if val_acc > best_acc:
            best_acc = val_acc
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.load_state_dict(best_state)
    _, val_logits = _evaluate(module, x[split.val], y[split.val])
    temperature = fit_temperature(val_logits, y[split.val])
    test_acc, _ = _evaluate(module, x[split.test], y[split.test])
    manifest_hash = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
    classifier = Classifier.from_module(
        module,
        list(classes),
        list(unsafe_classes),
        name=Path(out).stem,
        category=category,
        preprocess=preprocess,
        temperature=temperature,
        metadata={
            "arch": arch,
            "trained_on": str(root),
            "data_sha256": manifest_hash,
            "n_images": {"train": int(len(split.train)), "val": int(len(split.val)), "test": int(len(split.test))},
            "val_accuracy": best_acc,
            "test_accuracy": test_acc,
            "temperature": temperature,
            "epochs": epochs,
            "seed": seed,
            "history": history,
            "skipped": skipped,
            "train_seconds": time.perf_counter() - t0,
        },
    )
    classifier.save(out, arch=arch, arch_kwargs=arch_kwargs)
    return classifier
