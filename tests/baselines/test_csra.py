import numpy as np
import pytest

from safeview.baselines import csra, csra_cost
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
    assert cf.queries == 256  # every subset of the top 8, the empty one being the original
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
