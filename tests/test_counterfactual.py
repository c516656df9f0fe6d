import numpy as np
import pytest

from safeview.counterfactual import confidence_reduction, greedy_search, rank_regions, region_scores, regions_mask
from safeview.obfuscate import Obfuscator
from scenes import grid_segments, red_predict


@pytest.fixture
def scene():
    image = np.full((40, 40, 3), 90, np.uint8)
    image[::2, :, 1] = 110  # texture so regions differ
    segments = grid_segments()
    key = np.isin(segments, [5, 6])
    image[key] = (255, 0, 0)
    return image, segments, key


def test_region_scores_is_mean_attribution():
    seg = np.array([[0, 0, 1], [2, 2, 1]], np.int32)
    att = np.array([[1.0, 0.0, 0.5], [0.2, 0.4, 0.5]])
    np.testing.assert_allclose(region_scores(att, seg), [0.5, 0.5, 0.3])
    assert list(rank_regions([0.1, 0.5, 0.5, 0.2])) == [1, 2, 3, 0]


def test_finds_the_known_regions_and_prunes(scene):
    image, segments, key = scene
    predict = red_predict(key)
    # an imperfect ranking: decoys first, then the two key regions
    order = [0, 5, 9, 6, 3, 1, 2]
    cf = greedy_search(predict, image, segments, order, source_class=1, obfuscator=Obfuscator("fill"))
    assert cf.found
    assert cf.greedy_regions == [0, 5, 9, 6]
    assert sorted(cf.regions) == [5, 6]  # decoys pruned: the minimal set is the key regions
    assert cf.depth == 2 and cf.greedy_depth == 4
    assert np.array_equal(cf.mask, key)
    assert cf.final_probabilities[0] > 0.5
    assert np.array_equal(cf.output, Obfuscator("fill")(image, key))
    assert len(cf.probabilities) == 5  # original + 4 prefixes
    assert cf.obfuscated_fraction == pytest.approx(key.mean())


def test_without_pruning_keeps_the_prefix(scene):
    image, segments, key = scene
    cf = greedy_search(red_predict(key), image, segments, [0, 5, 9, 6], source_class=1, prune=False, batch_size=2)
    assert cf.regions == [0, 5, 9, 6]


def test_not_found_when_no_prefix_flips(scene):
    image, segments, key = scene
    order = [r for r in range(16) if r not in (5, 6)] + [5, 6]  # key regions beyond the budget
    cf = greedy_search(red_predict(key), image, segments, order, source_class=1, max_regions=10)
    assert not cf.found
    assert cf.depth == 10 and cf.output is None
    assert len(cf.probabilities) == 11


def test_uses_the_given_obfuscator(scene):
    image, segments, key = scene
    seen = []

    def obfuscator(img, mask):
        seen.append(mask.sum())
        return Obfuscator("fill", color=(0, 0, 255))(img, mask)

    cf = greedy_search(red_predict(key), image, segments, [5, 6], source_class=1, obfuscator=obfuscator)
    assert cf.found and seen and (cf.output[key] == (0, 0, 255)).all()


def test_deterministic_and_query_count(scene):
    image, segments, key = scene
    runs = [greedy_search(red_predict(key), image, segments, [5, 0, 6], source_class=1) for _ in range(2)]
    assert runs[0].regions == runs[1].regions and runs[0].queries == runs[1].queries
    assert np.array_equal(runs[0].mask, runs[1].mask)
    known = red_predict(key)(image[None])[0]
    reused = greedy_search(red_predict(key), image, segments, [5, 0, 6], source_class=1, original_probabilities=known)
    assert reused.regions == runs[0].regions and reused.queries == runs[0].queries - 1


def test_confidence_reduction_def2(scene):
    image, segments, key = scene
    red = confidence_reduction(red_predict(key), image, segments, source_class=1, obfuscator=Obfuscator("fill"))
    assert red.shape == (16,)
    assert red[5] > 0.4 and red[6] > 0.4
    assert np.allclose(np.delete(red, [5, 6]), 0)


def test_regions_mask(scene):
    _, segments, key = scene
    assert np.array_equal(regions_mask(segments, [5, 6]), key)


def test_growing_chunks_cover_the_range_in_doubling_batches():
    from safeview.counterfactual import growing_chunks

    assert list(growing_chunks(10, 5)) == [(0, 1), (1, 3), (3, 7), (7, 10)]
    assert list(growing_chunks(10, 2)) == [(0, 1), (1, 3), (3, 5), (5, 7), (7, 9), (9, 10)]
    assert list(growing_chunks(0, 5)) == []
    assert list(growing_chunks(3, 0)) == [(0, 1), (1, 2), (2, 3)]
