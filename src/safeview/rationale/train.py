"""Training CIIT with eq. 3 of the paper: minimise the negative log-likelihood of the answer tokens
given the image, the conditioned instruction and the control code, over a dataset of (image,
question, answer) records. Vision encoder and LLM stay frozen; the Q-Former (with its query tokens
and language projection) and the control projection are trained with AdamW and a cosine schedule
with warm-up (the paper's set-up: lr 5e-5). Checkpoints can be resumed.

A record is a JSON object: ``image`` (path, relative to the JSONL file, or an in-memory array),
``question``, ``answer``, and optionally ``control`` (category -> unsafe probability, given) and
``instruction`` (used verbatim instead of the prior's prompt). Without ``control``, the control code
is computed by the category classifiers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import SafeViewError
from ..images import load_image
from .ciit import ConditionalBlip
from .control import ControlCode, control_code
from .prompts import Templates, conditioned_prompt

OPTIMIZER_STATE = "trainer.pt"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file of records; relative image paths are resolved against its folder."""
    path = Path(path)
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            missing = {"image", "question", "answer"} - rec.keys()
        except json.JSONDecodeError as exc:
            raise SafeViewError(f"{path}:{n}: not JSON ({exc})") from exc
        if missing:
            raise SafeViewError(f"{path}:{n}: record lacks {sorted(missing)}")
        if isinstance(rec["image"], str) and not Path(rec["image"]).is_absolute():
            rec["image"] = str(path.parent / rec["image"])
        records.append(rec)
    return records


def prepare(
    records: Sequence[dict[str, Any]],
    *,
    classifiers: Sequence | None = None,
    threshold: float = 0.5,
    prior: bool = True,
    templates: Templates | None = None,
) -> list[dict[str, Any]]:
    """Resolve each record into ``image`` (array), ``control`` (:class:`ControlCode`), ``prompt``
    (the conditioned instruction, or the bare question when ``prior`` is off) and ``answer``."""
    out = []
    for rec in records:
        image = rec["image"] if isinstance(rec["image"], np.ndarray) else load_image(rec["image"])
        if rec.get("control") is not None:
            control = ControlCode(dict(rec["control"]), threshold)
        elif classifiers:
            control = control_code(classifiers, image, threshold=threshold)
        else:
            raise SafeViewError("a record has no control code and no classifiers were given to compute it")
        prompt = rec.get("instruction") or (conditioned_prompt(control, rec["question"], templates=templates) if prior else rec["question"])
        out.append({"image": image, "control": control, "prompt": prompt, "answer": rec["answer"], "question": rec["question"], "category": rec.get("category")})
    return out


@dataclass
class TrainConfig:
    """Defaults are the paper's (lr 5e-5, cosine with warm-up); ``warmup`` is a fraction of the steps."""

    epochs: int = 2
    batch_size: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.05
    warmup: float = 0.1
    guidance: float = 1.0
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0 = only at the end of each epoch


def _latest_checkpoint(out: Path) -> Path | None:
    found = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def train_ciit(
    ciit: ConditionalBlip,
    data: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    resume: bool = True,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Train on prepared ``data`` (see :func:`prepare`), writing ``out/checkpoint-STEP`` directories
    and the final CIIT checkpoint in ``out``; with ``resume`` continue from the latest checkpoint
    there. Returns the loss of every step (including resumed ones); ``progress(step, total, loss)``."""
    from transformers import get_cosine_schedule_with_warmup

    cfg = config or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = ciit.freeze()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup * total), total)
    step, history = 0, []
    latest = _latest_checkpoint(out) if resume else None
    if latest is not None:
        meta = ciit.load_trained(latest)
        state = torch.load(latest / OPTIMIZER_STATE, map_location=ciit.device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(meta["step"]), list(meta["history"])

    def checkpoint(directory: Path) -> None:
        ciit.save(directory, step=step, history=history, total=total)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / OPTIMIZER_STATE)

    ciit.train()
    for epoch in range(cfg.epochs):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(data))
        for b in range(per_epoch):
            if epoch * per_epoch + b < step:
                continue  # done before the resume
            rows = [data[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            batch = ciit.batch([r["image"] for r in rows], [r["prompt"] for r in rows], [r["answer"] for r in rows])
            loss = ciit.loss(batch, [r["control"] for r in rows], guidance=cfg.guidance)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            history.append(float(loss.detach()))
            if progress:
                progress(step, total, history[-1])
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint(out / f"checkpoint-{step}")
        checkpoint(out / f"checkpoint-{step}")
    ciit.eval()
    ciit.save(out, step=step, history=history, total=total)
    return history
