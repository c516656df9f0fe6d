"""SEDC, search for evidence counterfactuals (Vermeire et al. 2022): a best-first search over
image segments. Every single segment is removed (obfuscated) first; then, repeatedly, the
evaluated combination that lowers the source-class score most and has not been expanded yet is
expanded by each segment it lacks, until some combination flips the decision. Unlike CSE it uses
no attribution: the segments come from quickshift and the order from classifier queries alone.
"""

from __future__ import annotations

import numpy as np

from ..counterfactual import Counterfactual, FlipRule, Predict, regions_mask
from ..obfuscate import Obfuscate
from ._common import CountingPredict, classify_masks, quickshift_segments, resolve


def sedc(
    predict: Predict,
    image: np.ndarray,
    *,
    source_class: int,
    segments: np.ndarray | None = None,
    threshold: float = 0.5,
    max_regions: int = 10,
    max_queries: int = 2000,
    flip_rule: FlipRule | None = None,
    obfuscator: Obfuscate | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> Counterfactual:
    """Run SEDC on ``image`` (H×W×3 uint8) for ``source_class``.

    ``segments`` default to :func:`quickshift_segments` (LIME's parameters, ``seed``). Combinations
    hold at most ``max_regions`` segments and at most ``max_queries`` images are classified (the
    original included), ``batch_size`` per forward, each with ``obfuscator`` (default blur) over
    its segments. Among the combinations of one expansion that flip (``flip_rule``, default:
    another class > ``threshold``), the one with the lowest source-class probability is returned,
    its regions in the order they were added; SEDC does not prune, so ``greedy_regions`` equals
    ``regions``. ``probabilities`` holds the original's row, then the row of every combination
    expanded, in order, then the returned one's. If nothing flips within the budgets, ``found`` is
    False and the combination with the lowest source-class probability is returned.
    """
    image = np.ascontiguousarray(image)
    flipped, obfuscator = resolve(source_class, threshold, flip_rule, obfuscator)
    if segments is None:
        segments = quickshift_segments(image, seed=seed)
    counting = CountingPredict(predict)
    base = counting(image[None])
    rows = [base[0].tolist()]
    if flipped(base)[0]:  # already not the source class: nothing to obfuscate
        return Counterfactual(True, [], [], np.zeros(segments.shape, bool), rows, rows[0], source_class, counting.queries, image.copy())

    n_regions = int(segments.max()) + 1
    region_masks = [segments == r for r in range(n_regions)]
    combos: list[tuple[int, ...]] = []  # evaluated combinations, in evaluation order
    scores: list[float] = []  # source-class probability of each combination
    probabilities: list[np.ndarray] = []
    seen: set[frozenset[int]] = set()
    expanded: set[int] = set()

    def evaluate(candidates: list[tuple[int, ...]], parent_mask: np.ndarray) -> list[int]:
        """Classify the candidates within the query budget; the indices of those that flip."""
        candidates = candidates[: max(0, max_queries - counting.queries)]
        new_masks = [parent_mask | region_masks[c[-1]] for c in candidates]
        probs = classify_masks(counting, image, new_masks, obfuscator, batch_size=batch_size)
        start = len(combos)
        for combo, row in zip(candidates, probs):
            seen.add(frozenset(combo))
            combos.append(combo)
            scores.append(float(row[source_class]))
            probabilities.append(row)
        return [start + i for i in np.flatnonzero(flipped(probs))] if len(probs) else []

    empty = np.zeros(segments.shape, bool)
    hits = evaluate([(r,) for r in range(n_regions)], empty)
    while not hits and counting.queries < max_queries:
        open_ = [i for i in range(len(combos)) if i not in expanded and len(combos[i]) < max_regions]
        if not open_:
            break
        best = min(open_, key=lambda i: (scores[i], i))
        expanded.add(best)
        rows.append(probabilities[best].tolist())
        parent = combos[best]
        children = [parent + (r,) for r in range(n_regions) if r not in parent and frozenset(parent + (r,)) not in seen]
        hits = evaluate(children, regions_mask(segments, parent))

    if not combos:  # a query budget too small to try even one segment
        return Counterfactual(False, [], [], empty, rows, rows[0], source_class, counting.queries, None)
    chosen = min(hits or range(len(combos)), key=lambda i: (scores[i], i))
    rows.append(probabilities[chosen].tolist())
    mask = regions_mask(segments, combos[chosen])
    return Counterfactual(
        found=bool(hits),
        regions=list(combos[chosen]),
        greedy_regions=list(combos[chosen]),
        mask=mask,
        probabilities=rows,
        final_probabilities=probabilities[chosen].tolist(),
        source_class=source_class,
        queries=counting.queries,
        output=obfuscator(image, mask) if hits else None,
    )
