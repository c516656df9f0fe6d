"""Box censoring, the practitioners' baseline (NudeNet's ``censor()`` paints the detector's boxes):
obfuscate the axis-aligned bounding box of every connected region of an evidence mask — CSE's
chosen regions, the top attributed regions, or, for the synthetic stand-ins, the ground truth as
a perfect detector would box it. Comparing it with the evidence mask itself shows how many safe
pixels a box costs.
"""

from __future__ import annotations

import numpy as np

from ..counterfactual import Counterfactual, FlipRule, Predict
from ..obfuscate import Obfuscate
from ._common import CountingPredict, resolve

#: a box ``(y0, x0, y1, x1)``, ``y1``/``x1`` exclusive
Box = tuple[int, int, int, int]


def component_boxes(evidence: np.ndarray, *, margin: int = 0, connectivity: int = 2) -> list[Box]:
    """The bounding box of each connected component of ``evidence`` (H×W bool; ``connectivity`` 1:
    4-neighbours, 2: 8-neighbours), grown by ``margin`` pixels and clipped to the image, in the
    order of the components' first pixel (row-major)."""
    from skimage.measure import label, regionprops

    evidence = np.asarray(evidence, bool)
    h, w = evidence.shape
    boxes = []
    for region in regionprops(label(evidence, connectivity=connectivity)):
        y0, x0, y1, x1 = region.bbox
        boxes.append((max(0, y0 - margin), max(0, x0 - margin), min(h, y1 + margin), min(w, x1 + margin)))
    return boxes


def boxes_mask(shape: tuple[int, int], boxes: list[Box]) -> np.ndarray:
    """Boolean (H, W) mask of the union of ``boxes``."""
    mask = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def box_censor(
    predict: Predict,
    image: np.ndarray,
    evidence: np.ndarray,
    *,
    source_class: int,
    margin: int = 0,
    connectivity: int = 2,
    threshold: float = 0.5,
    flip_rule: FlipRule | None = None,
    obfuscator: Obfuscate | None = None,
) -> Counterfactual:
    """Obfuscate the boxes of ``evidence``'s connected regions (:func:`component_boxes`) in ``image``
    with ``obfuscator`` (default blur) and classify the result: two queries, the original and the
    boxed image. ``regions`` are the indices of the boxes (all of them, no search, so
    ``greedy_regions`` equals ``regions``); ``found`` says whether the boxed image flips the
    decision (``flip_rule``, default: another class > ``threshold``)."""
    image = np.ascontiguousarray(image)
    flipped, obfuscator = resolve(source_class, threshold, flip_rule, obfuscator)
    boxes = component_boxes(evidence, margin=margin, connectivity=connectivity)
    mask = boxes_mask(image.shape[:2], boxes)
    output = obfuscator(image, mask)
    counting = CountingPredict(predict)
    probs = counting(np.stack([image, output]))
    found = bool(flipped(probs[1:])[0])
    regions = list(range(len(boxes)))
    return Counterfactual(
        found=found,
        regions=regions,
        greedy_regions=list(regions),
        mask=mask,
        probabilities=[probs[0].tolist(), probs[1].tolist()],
        final_probabilities=probs[1].tolist(),
        source_class=source_class,
        queries=counting.queries,
        output=output if found else None,
    )
