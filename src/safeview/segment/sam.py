"""Segment Anything (SAM; Kirillov et al. 2023) as a CSE segmentation: the paper's Table 4 SAM row.

The paper ("Image Safeguarding", Experiments, *Counterfactual Subobject Explanations for
Obfuscation*) compares BASS with SLIC, Felzenszwalb, compact watershed and SAM as the partition
CSE scores and searches; SAM found fewer counterfactuals than BASS (Table 4: 29.5 / 50.0 / 39.5 %
against 90.6 / 82.0 / 72.8 %) because its masks are whole objects rather than subobjects. This
module reproduces that row with transformers' ``SamModel`` in SAM's *automatic mask generation*
mode:

1. the image embedding is computed once;
2. a ``points_per_side``² grid of single-point prompts is decoded in batches of ``batch_points``
   (three candidate masks per point);
3. candidates are kept when their predicted IoU exceeds ``pred_iou_thresh`` and their stability
   score (IoU of the mask thresholded at ±1 logit) exceeds ``stability_score_thresh``; near
   duplicates are dropped by box non-maximum suppression (``box_nms_thresh`` 0.7), as SAM's
   generator does;
4. the kept masks are painted into a label image largest first, so smaller masks (parts) stay on
   top of the larger ones (wholes) that contain them;
5. every pixel is covered: each connected component of what no mask covers becomes a region of its
   own, and regions smaller than ``min_region`` pixels are merged into the neighbour they share the
   longest border with.

SAM is not classifier-informed: ``attribution`` is accepted, like every method's, and ignored.
The weights come only from a local checkpoint directory (``SamModel.save_pretrained`` plus
``SamProcessor.save_pretrained``, e.g. a copy of ``facebook/sam-vit-base``) loaded with
``local_files_only=True``; nothing is downloaded. A loaded checkpoint is cached per path and
device, so CSE over many images loads it once.
"""

from __future__ import annotations

import heapq
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

#: files ``SamProcessor.save_pretrained`` writes (transformers ≥ 5; older versions the second)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")

#: masks up-sampled at once (a float mask of the working size each)
PAINT_CHUNK = 16

_CACHE: dict[tuple[str, str], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def _device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def checkpoint_dir(checkpoint: str | Path) -> Path:
    """``checkpoint`` as a path, if it is a directory holding a ``config.json`` (a cheap check that
    loads nothing); otherwise a one-line :class:`~safeview.errors.ModelError` saying what to give."""
    path = Path(checkpoint).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        what = "is not a directory" if not path.is_dir() else "holds no config.json"
        raise ModelError(
            f"{path}: {what}; give a local SAM checkpoint directory (SamModel.save_pretrained plus "
            "SamProcessor.save_pretrained, e.g. a copy of facebook/sam-vit-base); SafeView never downloads"
        )
    return path


def load_sam(checkpoint: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """``(SamModel, SamImageProcessor)`` from a local checkpoint directory, cached per path and
    device. A missing or unreadable checkpoint is a one-line :class:`~safeview.errors.ModelError`."""
    path = Path(checkpoint).expanduser()
    device = _device(device)
    key = (str(path.resolve()), device)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        checkpoint_dir(path)
        from transformers import SamImageProcessor, SamModel, SamProcessor
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = SamModel.from_pretrained(str(path), local_files_only=True)
            if any((path / name).is_file() for name in PROCESSOR_FILES):
                processor = SamProcessor.from_pretrained(str(path), local_files_only=True).image_processor
            else:  # a bare model directory: SAM's standard preprocessing at the model's input size
                side = model.config.vision_config.image_size
                processor = SamImageProcessor(size={"longest_edge": side}, pad_size={"height": side, "width": side})
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a corrupt or foreign directory
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ModelError(
                f"{path}: not a readable SAM checkpoint ({type(exc).__name__}: {first}); "
                "re-save it with SamModel/SamProcessor.save_pretrained"
            ) from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model = model.to(device).eval()
        _CACHE[key] = (model, processor)
        return model, processor


def _stability(logits, offset: float = 1.0):
    """SAM's stability score: IoU of the mask thresholded at +offset and at -offset (the first lies
    inside the second)."""
    inner = (logits > offset).flatten(1).sum(1)
    outer = (logits > -offset).flatten(1).sum(1)
    return inner.float() / outer.clamp(min=1).float()


def _boxes(masks):
    """(N, H, W) bool -> (N, 4) float boxes x0, y0, x1, y1 (inclusive); empty masks give 0-size boxes."""
    import torch

    n, h, w = masks.shape
    cols = masks.any(1)
    rows = masks.any(2)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x0 = torch.where(cols, xs, w).amin(1)
    x1 = torch.where(cols, xs, -1).amax(1)
    y0 = torch.where(rows, ys, h).amin(1)
    y1 = torch.where(rows, ys, -1).amax(1)
    return torch.stack([x0, y0, x1, y1], 1).float()


def _box_nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """Greedy non-maximum suppression (highest score first, ties by index): indices kept."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.asarray(kept)
            ix = np.clip(np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]) + 1, 0, None)
            iy = np.clip(np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]) + 1, 0, None)
            inter = ix * iy
            if (inter / (area[k] + area[i] - inter) > thresh).any():
                continue
        kept.append(i)
    return kept


def merge_small_regions(labels: np.ndarray, min_region: int) -> np.ndarray:
    """Split ``labels`` into 4-connected regions, then merge every region smaller than
    ``min_region`` pixels, smallest first, into the neighbour it shares the longest border with
    (ties: the larger neighbour, then the lower label). Returns labels ``0..K-1`` (int32)."""
    from . import connected_labels, region_contacts

    labels = connected_labels(labels)
    k = int(labels.max()) + 1
    if min_region <= 1 or k == 1:
        return labels
    sizes = np.bincount(labels.ravel(), minlength=k).astype(np.int64)
    adjacency = region_contacts(labels)
    parent = np.arange(k)
    heap = [(int(s), r) for r, s in enumerate(sizes) if s < min_region]
    heapq.heapify(heap)
    while heap:
        size, r = heapq.heappop(heap)
        if parent[r] != r or sizes[r] != size or not adjacency[r]:
            continue  # merged away, grown since (re-queued), or the only region left
        into = max(adjacency[r], key=lambda q: (adjacency[r][q], sizes[q], -q))
        parent[r] = into
        sizes[into] += sizes[r]
        neighbours, adjacency[r] = adjacency[r], {}
        for q, c in neighbours.items():
            del adjacency[q][r]
            if q != into:
                adjacency[into][q] = adjacency[into].get(q, 0) + c
                adjacency[q][into] = adjacency[q].get(into, 0) + c
        if sizes[into] < min_region:
            heapq.heappush(heap, (int(sizes[into]), into))
    root = parent.copy()
    while True:  # resolve merge chains
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return connected_labels(root[labels])


def sam(
    image: np.ndarray,
    attribution: np.ndarray | None = None,
    *,
    checkpoint: str | Path | None = None,
    points_per_side: int = 16,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    min_region: int = 200,
    batch_points: int = 64,
    box_nms_thresh: float = 0.7,
    max_side: int = 1024,
    device: str | None = None,
) -> np.ndarray:
    """SAM automatic masks painted into a full partition of ``image`` (H×W×3 uint8).

    - ``checkpoint``: local SAM directory (required; ``--sam PATH`` on the command line).
    - ``points_per_side``: the prompt grid's side (SAM's default is 32; 16 keeps CPU runs
      affordable).
    - ``pred_iou_thresh``, ``stability_score_thresh``: SAM's mask filters (0 disables one).
    - ``min_region``: regions smaller than this many pixels are merged into a neighbour (the
      paper's Felzenszwalb minimum size, 200).
    - ``batch_points``: prompts decoded at once.
    - ``box_nms_thresh``: a mask whose box overlaps a better-scored mask's box by more than this
      IoU is a duplicate (1 keeps all).
    - ``max_side``: masks are made at most this many pixels on the long side (SAM's input size),
      the labels then scaled up to the image with nearest neighbour.
    - ``device``: torch device (default: cuda when present).

    ``attribution`` is ignored (SAM is not classifier-informed). Deterministic.
    """
    del attribution
    import torch

    if checkpoint is None:
        raise ModelError(
            "SAM segmentation needs a local checkpoint directory: pass checkpoint=PATH (on the command line, "
            "--sam PATH); SafeView never downloads one"
        )
    if min(points_per_side, batch_points, max_side) < 1:
        raise ValueError("points_per_side, batch_points and max_side must be at least 1")
    model, processor = load_sam(checkpoint, device)
    anchor = next(model.parameters())
    dev, dtype = anchor.device, anchor.dtype
    image = np.array(image, dtype=np.uint8)  # a writable copy: the processor wraps it in a tensor
    h, w = image.shape[:2]

    inputs = processor(images=image, return_tensors="pt")
    reshaped = inputs["reshaped_input_sizes"].tolist()
    new_h, new_w = reshaped[0]
    # the prompt grid (cell centres) in the resized image's coordinates, x first, rows of x
    side = (np.arange(points_per_side) + 0.5) / points_per_side
    grid = np.stack(np.meshgrid(side * new_w, side * new_h), -1).reshape(-1, 2)
    points = torch.as_tensor(grid, dtype=torch.float32, device=dev)

    # masks are made and painted at most ``max_side`` px on the long side (they come from SAM's
    # low-resolution logits, 256² for the released models), then the labels are scaled up
    scale = min(1.0, max_side / max(h, w))
    work = [max(1, round(h * scale)), max(1, round(w * scale))]
    upsample = lambda logits, binarize: processor.post_process_masks(  # noqa: E731
        [logits[:, None]], [work], reshaped, binarize=binarize)[0][:, 0]

    low_res: list[torch.Tensor] = []  # kept masks' low-resolution logits
    scores: list[float] = []
    areas: list[int] = []
    boxes: list[np.ndarray] = []
    with torch.inference_mode():
        embedding = model.get_image_embeddings(inputs["pixel_values"].to(dev, dtype))
        for start in range(0, len(points), batch_points):
            chunk = points[start : start + batch_points]
            out = model(
                image_embeddings=embedding,
                input_points=chunk[None, :, None, :],
                input_labels=torch.ones((1, len(chunk), 1), dtype=torch.long, device=dev),
                multimask_output=True,
            )
            candidates = out.pred_masks[0].flatten(0, 1).float()  # (3B, h', w')
            ious = out.iou_scores[0].flatten().float()
            if pred_iou_thresh > 0:
                candidates, ious = candidates[ious > pred_iou_thresh], ious[ious > pred_iou_thresh]
            for first in range(0, len(candidates), PAINT_CHUNK):  # bounded memory at any image size
                logits, iou = candidates[first : first + PAINT_CHUNK], ious[first : first + PAINT_CHUNK]
                full = upsample(logits, False)
                if stability_score_thresh > 0:
                    stable = _stability(full) > stability_score_thresh
                    logits, iou, full = logits[stable], iou[stable], full[stable]
                binary = full > 0.0
                area = binary.flatten(1).sum(1)
                nonempty = area > 0
                logits, iou, binary, area = logits[nonempty], iou[nonempty], binary[nonempty], area[nonempty]
                low_res.extend(logits.cpu())
                scores.extend(iou.cpu().tolist())
                areas.extend(area.cpu().tolist())
                boxes.extend(_boxes(binary).cpu().numpy())

        painted = np.full(work, -1, np.int64)
        if low_res:
            kept = _box_nms(np.asarray(boxes), np.asarray(scores), box_nms_thresh)
            # largest first, so smaller masks end on top; ties by score, then grid order
            kept.sort(key=lambda i: (-areas[i], scores[i], i))
            for first in range(0, len(kept), PAINT_CHUNK):
                ids = kept[first : first + PAINT_CHUNK]
                masks = upsample(torch.stack([low_res[i] for i in ids]).to(dev), True).cpu().numpy()
                for j, mask in zip(ids, masks):
                    painted[mask] = j

    # what no mask covers: each connected component of it is a region of its own
    uncovered = painted < 0
    if uncovered.any():
        from skimage.measure import label as cc_label

        holes = cc_label(uncovered, connectivity=1)
        painted[uncovered] = painted.max() + holes[uncovered]
    if work == [h, w]:
        return merge_small_regions(painted, min_region)
    labels = merge_small_regions(painted, max(1, round(min_region * scale * scale)))
    # nearest-neighbour upscaling maps rows and columns monotonically onto the working grid, so
    # every region stays one 4-connected component
    rows = np.minimum(((np.arange(h) + 0.5) * work[0] / h).astype(np.int64), work[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * work[1] / w).astype(np.int64), work[1] - 1)
    return labels[rows[:, None], cols[None, :]]
