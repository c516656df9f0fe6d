"""Counterfactual subobject explanations (CSE): Def. 1 (region attribution score), Def. 2 (region
confidence reduction) and the informed greedy region search of the paper's Sec. 3.3.

Hand-written because no library does this search: regions are ranked by mean attribution, then the
top-1, top-2, … regions are masked *with the obfuscation the user will receive* until the
classifier's decision flips (another class above ``threshold``) or ``max_regions`` is reached.
Prefixes are evaluated in batches (one forward per batch), and a pruning pass then drops any
chosen region whose removal keeps the output flipped, so the returned set is 1-minimal. The mask
that is returned is the one whose obfuscated output was verified by the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from .obfuscate import Obfuscate, Obfuscator

#: the predict contract: a batch of uint8 images (N, H, W, 3) -> probabilities (N, C)
Predict = Callable[[np.ndarray], np.ndarray]
#: decides, per row of probabilities, whether the decision has flipped away from the source class
FlipRule = Callable[[np.ndarray], np.ndarray]


def region_scores(attribution: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Def. 1: the mean attribution of each region ``0..K-1`` (regions with no pixels score 0)."""
    labels = np.asarray(segments).ravel()
    if np.asarray(attribution).shape != np.asarray(segments).shape:
        raise ValueError(f"attribution {np.shape(attribution)} and segments {np.shape(segments)} differ in shape")
    k = int(labels.max()) + 1 if labels.size else 0
    sums = np.bincount(labels, weights=np.asarray(attribution, np.float64).ravel(), minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.divide(sums, counts, out=np.zeros(k), where=counts > 0)


def rank_regions(scores: np.ndarray) -> np.ndarray:
    """Region indices by descending score; ties keep the lower index first (deterministic)."""
    return np.argsort(-np.asarray(scores), kind="stable")


def regions_mask(segments: np.ndarray, regions: Sequence[int]) -> np.ndarray:
    """Boolean mask of the union of ``regions``."""
    return np.isin(segments, np.asarray(list(regions), dtype=segments.dtype))


def default_flip_rule(source_class: int, threshold: float) -> FlipRule:
    """The paper's rule: some class other than ``source_class`` has probability above ``threshold``."""

    def flipped(probabilities: np.ndarray) -> np.ndarray:
        others = np.delete(np.asarray(probabilities), source_class, axis=1)
        return others.max(axis=1) > threshold

    return flipped


def confidence_reduction(
    predict: Predict,
    image: np.ndarray,
    segments: np.ndarray,
    *,
    source_class: int,
    obfuscator: Obfuscate | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Def. 2: for each region k, how much masking region k alone lowers the source-class
    probability (positive = the region supports the decision). One forward per ``batch_size``."""
    obfuscator = obfuscator or Obfuscator()
    base = float(np.asarray(predict(image[None]))[0, source_class])
    k = int(segments.max()) + 1
    out = np.empty(k)
    for start in range(0, k, batch_size):
        ids = range(start, min(k, start + batch_size))
        batch = np.stack([obfuscator(image, segments == i) for i in ids])
        out[start : start + len(batch)] = base - np.asarray(predict(batch))[:, source_class]
    return out


@dataclass
class Counterfactual:
    """The result of the search. ``regions`` is the final (pruned) set in the order it was masked;
    ``greedy_regions`` the top-k prefix the greedy search stopped at."""

    found: bool
    regions: list[int]
    greedy_regions: list[int]
    mask: np.ndarray
    probabilities: list[list[float]]  # row 0: the original image; row k: the top-k prefix masked
    final_probabilities: list[float]  # the verified output (pruned mask), or the last step if not found
    source_class: int
    queries: int
    output: np.ndarray | None = field(default=None, repr=False)  # the verified obfuscated image

    @property
    def depth(self) -> int:
        return len(self.regions)

    @property
    def greedy_depth(self) -> int:
        return len(self.greedy_regions)

    @property
    def obfuscated_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def growing_chunks(n: int, cap: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` slices of ``range(n)`` of sizes 1, 2, 4, … up to ``cap``: a search that
    usually stops early pays about twice its depth in queries, not ``cap`` per step, while a deep
    one still gets batched forwards."""
    start, size = 0, 1
    while start < n:
        end = min(n, start + size)
        yield start, end
        start, size = end, min(max(1, cap), 2 * size)


def greedy_search(
    predict: Predict,
    image: np.ndarray,
    segments: np.ndarray,
    order: Sequence[int],
    *,
    source_class: int,
    threshold: float = 0.5,
    max_regions: int = 10,
    obfuscator: Obfuscate | None = None,
    batch_size: int = 5,
    prune: bool = True,
    flip_rule: FlipRule | None = None,
    original_probabilities: np.ndarray | None = None,
) -> Counterfactual:
    """Informed greedy search (Sec. 3.3): mask the top-1, top-2, … regions of ``order`` with
    ``obfuscator`` until ``flip_rule`` holds (default: another class > ``threshold``), trying at
    most ``max_regions`` regions; prefixes are classified in growing batches (1, 2, 4, … up to ``batch_size``).

    With ``prune``, chosen regions are then dropped one at a time (lowest-ranked first) while the
    output stays flipped. ``found`` is False when no prefix of ≤ ``max_regions`` regions flips.
    ``original_probabilities``: the caller's prediction on ``image`` (saves that query).
    """
    obfuscator = obfuscator or Obfuscator()
    flipped = flip_rule or default_flip_rule(source_class, threshold)
    image = np.ascontiguousarray(image)
    order = [int(r) for r in list(order)[:max_regions]]
    queries = 0

    def classify(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        nonlocal queries
        batch = np.stack([obfuscator(image, m) for m in masks])
        probs = np.asarray(predict(batch), dtype=np.float64)
        queries += len(masks)
        return probs, batch

    if original_probabilities is None:
        base_probs, _ = classify([np.zeros(segments.shape, bool)])
    else:
        base_probs = np.asarray(original_probabilities, dtype=np.float64).reshape(1, -1)
    rows = [base_probs[0].tolist()]
    empty = np.zeros(segments.shape, bool)
    if flipped(base_probs)[0]:  # already not the source class: nothing to obfuscate
        return Counterfactual(True, [], [], empty, rows, rows[0], source_class, queries, image.copy())

    # cumulative masks of the prefixes, built incrementally
    prefix_masks, current = [], empty
    for region in order:
        current = current | (segments == region)
        prefix_masks.append(current)

    hit: int | None = None
    for start, end in growing_chunks(len(prefix_masks), batch_size):
        probs, outputs = classify(prefix_masks[start:end])
        flips = flipped(probs)
        stop = int(np.argmax(flips)) if flips.any() else len(probs)
        rows.extend(p.tolist() for p in probs[: stop + 1 if flips.any() else len(probs)])
        if flips.any():
            hit = start + stop
            verified_output, verified_probs = outputs[stop], probs[stop]
            break
    if hit is None:
        last = prefix_masks[-1] if prefix_masks else empty
        return Counterfactual(False, order, order, last, rows, rows[-1], source_class, queries, None)

    chosen = order[: hit + 1]
    greedy = list(chosen)
    if prune and len(chosen) > 1:
        changed = True
        while changed and len(chosen) > 1:
            changed = False
            # candidates: drop one region, lowest-ranked (last masked) first
            drops = list(reversed(chosen))
            candidates = [[r for r in chosen if r != d] for d in drops]
            for start, end in growing_chunks(len(candidates), batch_size):
                probs, outputs = classify([regions_mask(segments, c) for c in candidates[start:end]])
                flips = flipped(probs)
                if flips.any():
                    i = int(np.argmax(flips))
                    chosen, verified_output, verified_probs = candidates[start + i], outputs[i], probs[i]
                    changed = True
                    break
    return Counterfactual(
        found=True,
        regions=chosen,
        greedy_regions=greedy,
        mask=regions_mask(segments, chosen),
        probabilities=rows,
        final_probabilities=verified_probs.tolist(),
        source_class=source_class,
        queries=queries,
        output=verified_output,
    )
