"""CSRA, counterfactual super-region attribution (Bethany et al., USENIX Security 2023), as the CSE
paper compares against it: Grad-CAM on the last convolutional block, SLIC with 30 segments and
compactness 50, the numROI = 10 regions of highest mean attribution (Def. 1; the paper sets numROI
= 10 "to match time complexity"), every one of their 2^10 = 1,024 subsets classified (batched),
and the subset of lowest cost chosen. ``top_k`` is numROI.

Memory stays bounded whatever numROI: each batch's masks are built from a per-pixel bit code of
the top regions just before it is classified, and neither the masks nor the obfuscated images of
earlier batches are kept (the chosen one is rebuilt; the obfuscator is deterministic).

The cost is known only in outline — "confidence plus masked fraction, with penalties above
0.5/0.75/0.8 of the image masked" — so this is a documented approximation: for a subset S with
masked fraction a(S) and source-class probability p(S) after obfuscation,

    cost(S) = p(S) + a(S) + sum(weight for (bound, weight) in penalties if a(S) > bound)

with a unit step penalty at each of the three bounds by default. CSRA explains a decision by a
subset that *changes* it, so the subset chosen is the cheapest among those that flip the decision;
only when none of them flips is the cheapest overall returned, with ``found`` False. Ties go to the
subset with the fewest regions, then the lowest bit pattern (deterministic).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..classify import Classifier
from ..counterfactual import Counterfactual, FlipRule, Predict, rank_regions, region_scores
from ..errors import SafeViewError
from ..obfuscate import Obfuscate
from ._common import CountingPredict, resolve

#: numROI, the number of top regions whose subsets are searched (the paper's comparison: 10)
NUM_ROI = 10
#: numROI above which 2**numROI subsets are refused (a million forwards per image)
MAX_NUM_ROI = 20
#: (masked fraction above which a penalty applies, penalty added to the cost)
PENALTIES: tuple[tuple[float, float], ...] = ((0.5, 1.0), (0.75, 1.0), (0.8, 1.0))


def csra_cost(probability: np.ndarray, fraction: np.ndarray, penalties: Sequence[tuple[float, float]] = PENALTIES) -> np.ndarray:
    """The approximated CSRA cost of each subset: source-class probability plus masked fraction plus
    the step penalties of every bound the fraction exceeds."""
    probability, fraction = np.asarray(probability, np.float64), np.asarray(fraction, np.float64)
    cost = probability + fraction
    for bound, weight in penalties:
        cost = cost + weight * (fraction > bound)
    return cost


def csra(
    predict: Predict,
    image: np.ndarray,
    *,
    source_class: int,
    classifier: Classifier | None = None,
    attribution: np.ndarray | None = None,
    segments: np.ndarray | None = None,
    n_segments: int = 30,
    compactness: float = 50.0,
    top_k: int = NUM_ROI,
    penalties: Sequence[tuple[float, float]] = PENALTIES,
    threshold: float = 0.5,
    flip_rule: FlipRule | None = None,
    obfuscator: Obfuscate | None = None,
    batch_size: int = 32,
) -> Counterfactual:
    """Run CSRA on ``image`` (H×W×3 uint8) for ``source_class``.

    ``attribution`` (H×W) defaults to Grad-CAM of ``classifier`` on its last convolutional block;
    ``segments`` to SLIC(``n_segments``, ``compactness``). All ``2**top_k`` subsets of the
    ``top_k`` (numROI, default 10) top regions are classified with ``obfuscator`` (default blur),
    ``batch_size`` per forward (at most that many masks and obfuscated images exist at once), the
    empty one being the original image. The subset of lowest :func:`csra_cost` among those that
    flip the decision (``flip_rule``, default: another class > ``threshold``) is chosen; ``found``
    is False when no subset flips (then the cheapest overall is returned);
    its regions come in rank order and there is no pruning, so ``greedy_regions`` equals
    ``regions``. ``probabilities`` holds the original's row and the chosen subset's.
    """
    image = np.ascontiguousarray(image)
    flipped, obfuscator = resolve(source_class, threshold, flip_rule, obfuscator)
    if attribution is None:
        if classifier is None:
            raise SafeViewError("csra needs a classifier to compute its Grad-CAM, or a precomputed attribution")
        from ..attribute import attribution_map

        attribution = attribution_map(classifier, image, source_class, "gradcam")
    if segments is None:
        from ..segment import segment

        segments = segment(image, "slic", n_segments=n_segments, compactness=compactness)
    if not 0 <= int(top_k) <= MAX_NUM_ROI:
        raise SafeViewError(f"csra: top_k (numROI) must be 0..{MAX_NUM_ROI}, got {top_k} (2**top_k subsets are classified)")
    top = [int(r) for r in rank_regions(region_scores(attribution, segments))[: int(top_k)]]
    n_subsets = 1 << len(top)

    # subset ``bits`` holds region top[i] when bit i is set; a pixel's code has bit i set when it
    # lies in top[i], so a subset's mask is ``code & bits != 0`` and its area the sum of its regions'
    code = np.zeros(segments.shape, np.int32)
    for i, r in enumerate(top):
        code[segments == r] = 1 << i
    bit_table = (np.arange(n_subsets)[:, None] >> np.arange(len(top))[None, :]) & 1  # (subsets, regions)
    areas = np.array([np.count_nonzero(segments == r) for r in top], np.int64)
    fractions = (bit_table @ areas) / segments.size
    sizes = bit_table.sum(axis=1)

    counting = CountingPredict(predict)
    step = max(1, int(batch_size))
    rows = []
    for start in range(0, n_subsets, step):
        batch = np.stack([obfuscator(image, (code & bits) != 0) for bits in range(start, min(n_subsets, start + step))])
        rows.append(counting(batch))
        del batch
    probs = np.concatenate(rows)
    cost = csra_cost(probs[:, source_class], fractions, penalties)
    flips = np.asarray(flipped(probs), bool)
    found = bool(flips.any())
    order = np.lexsort((np.arange(n_subsets), sizes, cost, ~flips))  # flipping subsets first
    best = int(order[0])
    chosen = [r for i, r in enumerate(top) if best >> i & 1]
    mask = (code & best) != 0
    return Counterfactual(
        found=found,
        regions=chosen,
        greedy_regions=list(chosen),
        mask=mask,
        probabilities=[probs[0].tolist(), probs[best].tolist()],
        final_probabilities=probs[best].tolist(),
        source_class=source_class,
        queries=counting.queries,
        output=obfuscator(image, mask) if found else None,
    )
