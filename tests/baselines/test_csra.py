import numpy as np
import pytest

from safeview.baselines import csra, csra_cost
from safeview.baselines.csra import NUM_ROI
from safeview.counterfactual import regions_mask
from safeview.errors import SafeViewError
from safeview.obfuscate import Obfuscator

FILL = Obfuscator("fill")


def attribution_favouring(segments, regions):
    """A map whose mean is highest on ``regions`` (in that order), then decreasing by label."""
    values = np.linspace(0.3, 0.0, int(segments.max()) + 1)
    for rank, r in enumerate(regions):
        values[r] = 1.0 - 0.1 * rank
    return values[segments]


def test_finds_the_minimal_subset_of_the_top_regions(grid_scene):
    image, segments, key, predict = grid_scene
    attribution = attribution_favouring(segments, [0, 5, 9, 6])  # decoys ranked among the key cells
    cf = csra(predict, image, source_class=1, attribution=attribution, segments=segments, obfuscator=FILL)
    assert cf.found
    assert sorted(cf.regions) == [5, 6] and cf.greedy_regions == cf.regions
    assert np.array_equal(cf.mask, key)
    assert cf.queries == 1024  # every subset of the top numROI = 10, the empty one being the original
    assert cf.final_probabilities[0] > 0.5 and cf.probabilities[0][1] > 0.5
    assert np.array_equal(cf.output, FILL(image, key))
    assert np.array_equal(cf.output[~cf.mask], image[~cf.mask])  # safe pixels bit-identical


def test_only_subsets_of_the_top_k_are_tried(grid_scene):
    image, segments, key, predict = grid_scene
    attribution = attribution_favouring(segments, [0, 1, 2, 5])  # cell 6 is outside the top 4
    cf = csra(predict, image, source_class=1, attribution=attribution, segments=segments, top_k=4, obfuscator=FILL)
    assert cf.queries == 16
    assert not cf.found and cf.output is None
    assert set(cf.regions) <= {0, 1, 2, 5}
    assert np.array_equal(cf.mask, regions_mask(segments, cf.regions))


def test_cost_penalises_large_masks():
    fractions = np.array([0.1, 0.55, 0.78, 0.85])
    np.testing.assert_allclose(csra_cost(np.zeros(4), fractions), [0.1, 1.55, 2.78, 3.85])
    # masking everything would lower confidence most, but the penalties keep the choice small
    assert int(np.argmin(csra_cost(np.array([0.3, 0.2, 0.1, 0.0]), fractions))) == 0


def test_penalties_change_the_choice(grid_scene):
    image, segments, key, predict = grid_scene
    attribution = attribution_favouring(segments, [5, 6])
    # a prohibitive penalty on any mask above 10 % of the image makes both key cells (12.5 %) the
    # costliest subset, but it is the only one that flips the decision, so CSRA still chooses it
    cf = csra(predict, image, source_class=1, attribution=attribution, segments=segments, top_k=2,
              penalties=((0.1, 10.0),), obfuscator=FILL)
    assert sorted(cf.regions) == [5, 6] and cf.found and cf.output is not None
    # with only one key cell among the top regions nothing flips: the cheapest is returned, not found
    alone = csra(predict, image, source_class=1, attribution=attribution_favouring(segments, [5, 0]), segments=segments,
                 top_k=2, penalties=((0.1, 10.0),), obfuscator=FILL)
    assert not alone.found and alone.output is None
    assert alone.final_probabilities[1] >= 0.5


def test_gradcam_and_slic_by_default(red_classifier, red_scene):
    image, truth = red_scene
    cf = csra(red_classifier, image, source_class=1, classifier=red_classifier, obfuscator=FILL)
    assert cf.found
    assert red_classifier(cf.output[None])[0, 0] > 0.5
    assert (cf.mask & truth).sum() > 0.5 * truth.sum()
    assert np.array_equal(cf.output[~cf.mask], image[~cf.mask])
    again = csra(red_classifier, image, source_class=1, classifier=red_classifier, obfuscator=FILL)
    assert again.regions == cf.regions and np.array_equal(again.mask, cf.mask)


def test_needs_a_classifier_or_an_attribution(grid_scene):
    image, segments, _, predict = grid_scene
    with pytest.raises(SafeViewError):
        csra(predict, image, source_class=1, segments=segments)


def test_num_roi_is_ten_as_in_the_paper_and_reaches_the_ninth_and_tenth_regions(grid_scene):
    image, segments, key, predict = grid_scene
    assert NUM_ROI == 10
    # the key cells are ranked 9th and 10th: numROI = 10 reaches them, numROI = 8 cannot
    attribution = attribution_favouring(segments, [0, 1, 2, 3, 4, 7, 8, 9, 5, 6])
    seen = []

    def counting(batch):
        seen.append(len(batch))
        return predict(batch)

    ten = csra(counting, image, source_class=1, attribution=attribution, segments=segments, obfuscator=FILL, batch_size=50)
    assert sum(seen) == ten.queries == 1024 and max(seen) == 50  # batched, every subset once
    assert ten.found and sorted(ten.regions) == [5, 6] and np.array_equal(ten.mask, key)
    assert np.array_equal(ten.output, FILL(image, key))
    eight = csra(predict, image, source_class=1, attribution=attribution, segments=segments, top_k=8, obfuscator=FILL)
    assert eight.queries == 256 and not eight.found and eight.output is None
    assert not set(eight.regions) & {5, 6}


def test_num_roi_ten_matches_an_exhaustive_reference(grid_scene):
    """The batched bit-code search chooses what classifying every subset's regions_mask would."""
    image, segments, key, predict = grid_scene
    rng = np.random.default_rng(3)
    attribution = rng.random(segments.shape)
    # a smooth detector (no hard flip), so the cost decides among many flipping subsets
    weights = rng.random(segments.shape)

    def soft(batch):
        changed = (np.asarray(batch) != image[None]).any(axis=3)
        p = 0.9 - 1.6 * (changed * weights).sum(axis=(1, 2)) / weights.sum()
        p = np.clip(p, 0.01, 0.99)
        return np.stack([1 - p, p], axis=1)

    cf = csra(soft, image, source_class=1, attribution=attribution, segments=segments, obfuscator=FILL, batch_size=7)
    from safeview.counterfactual import rank_regions, region_scores

    top = [int(r) for r in rank_regions(region_scores(attribution, segments))[:10]]
    best = None
    for bits in range(1024):
        regions = [r for i, r in enumerate(top) if bits >> i & 1]
        mask = regions_mask(segments, regions)
        p = soft(FILL(image, mask)[None])
        flips = p[0, 0] > 0.5
        key_ = (not flips, float(csra_cost(p[:, 1], np.array([mask.mean()]))[0]), len(regions), bits)
        best = min(best, (key_, regions)) if best else (key_, regions)
    assert cf.found and cf.regions == best[1]
    assert np.array_equal(cf.mask, regions_mask(segments, best[1]))


def test_memory_stays_bounded_at_num_roi_ten():
    """1,024 subsets of a 256² image: all their masks would take 64 MiB, all their obfuscated
    images 192 MiB; the batched search holds one batch."""
    import tracemalloc

    image = np.zeros((256, 256, 3), np.uint8)
    image[..., 0] = 200
    segments = np.kron(np.arange(16, dtype=np.int32).reshape(4, 4), np.ones((64, 64), np.int32))
    attribution = np.linspace(1, 0, 16)[segments]

    def predict(batch):
        p = np.full(len(batch), 0.9)
        return np.stack([1 - p, p], axis=1)

    tracemalloc.start()
    cf = csra(predict, image, source_class=1, attribution=attribution, segments=segments, obfuscator=FILL, batch_size=32)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert cf.queries == 1024 and not cf.found
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_num_roi_out_of_range_is_refused(grid_scene):
    image, segments, _, predict = grid_scene
    with pytest.raises(SafeViewError, match="numROI"):
        csra(predict, image, source_class=1, attribution=np.ones(segments.shape), segments=segments, top_k=21)
