"""LIME as a counterfactual baseline (Ribeiro et al. 2016, through the ``lime`` package): LIME
explains the source class with a weighted ridge regression over random on/off superpixel samples
(quickshift superpixels, 1,000 samples by default); LIME is not a counterfactual method, so, as the
comparison protocol prescribes, its positively weighted superpixels are then obfuscated one by one,
highest weight first, until the decision flips (at most ``max_regions``).

LIME's samples hide their "off" superpixels with the caller's obfuscator (the fully obfuscated
image stands in for them), not with LIME's per-superpixel mean colour, so LIME sees the same
perturbation as every other method: a mean colour hides nothing in a uniform region. The package's
sampler (``data_labels``) and its weighted ridge regression (``explain_instance_with_data``) do
the work, with LIME's default cosine distance and kernel width.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..counterfactual import Counterfactual, FlipRule, Predict, greedy_search
from ..errors import SafeViewError
from ..obfuscate import Obfuscate
from ._common import CountingPredict, quickshift_segments, resolve


def lime_counterfactual(
    predict: Predict,
    image: np.ndarray,
    *,
    source_class: int,
    segments: np.ndarray | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    max_regions: int = 10,
    flip_rule: FlipRule | None = None,
    obfuscator: Obfuscate | None = None,
    lime_batch_size: int = 50,
    batch_size: int = 5,
) -> Counterfactual:
    """Explain ``source_class`` on ``image`` (H×W×3 uint8) with LIME, then obfuscate its top positive
    superpixels one by one until ``flip_rule`` holds (default: another class > ``threshold``).

    ``segments`` default to :func:`quickshift_segments` (LIME's parameters, ``seed``); LIME draws
    ``num_samples`` samples with ``random_state=seed`` (the first is the original image), hides
    their off superpixels with ``obfuscator`` and classifies them ``lime_batch_size`` per
    forward. The prefixes are classified ``batch_size`` per forward with ``obfuscator`` (default
    blur), without pruning, as in :func:`safeview.counterfactual.greedy_search`; ``queries``
    counts LIME's samples plus the search's images.
    """
    from lime.lime_image import LimeImageExplainer
    from sklearn.metrics import pairwise_distances

    image = np.ascontiguousarray(image)
    flipped, obfuscator = resolve(source_class, threshold, flip_rule, obfuscator)
    if segments is None:
        segments = quickshift_segments(image, seed=seed)
    if not np.array_equal(np.unique(segments), np.arange(int(segments.max()) + 1)):
        raise SafeViewError("LIME needs segments labelled 0..K-1 with every label present (as safeview.segment returns)")
    counting = CountingPredict(predict)
    explainer = LimeImageExplainer(random_state=seed)
    hidden = obfuscator(image, np.ones(segments.shape, bool))
    data, labels = explainer.data_labels(image, hidden, segments, counting, num_samples, batch_size=lime_batch_size)
    distances = pairwise_distances(data, data[:1], metric="cosine").ravel()
    _, local_exp, _, _ = explainer.base.explain_instance_with_data(
        data, labels, distances, source_class, data.shape[1], feature_selection=explainer.feature_selection
    )
    weights = dict(local_exp)
    positive = sorted((r for r, w in weights.items() if w > 0), key=lambda r: (-weights[r], r))
    cf = greedy_search(
        predict,
        image,
        segments,
        positive,
        source_class=source_class,
        threshold=threshold,
        max_regions=max_regions,
        obfuscator=obfuscator,
        batch_size=batch_size,
        prune=False,
        flip_rule=flipped,
    )
    return dataclasses.replace(cf, queries=cf.queries + counting.queries)
