import numpy as np

from safeview.baselines import quickshift_segments, sedc
from safeview.counterfactual import regions_mask
from safeview.obfuscate import Obfuscator

FILL = Obfuscator("fill")


def test_best_first_finds_the_known_regions(grid_scene):
    image, segments, key, predict = grid_scene
    cf = sedc(predict, image, source_class=1, segments=segments, obfuscator=FILL)
    assert cf.found
    # singletons: cells 5 and 6 each halve the confidence; 5 (lower label) is expanded, 6 completes it
    assert cf.regions == [5, 6] and cf.greedy_regions == [5, 6]
    assert np.array_equal(cf.mask, key)
    assert cf.queries == 1 + 16 + 15  # original, every single cell, every extension of cell 5
    assert cf.final_probabilities[0] > 0.5
    assert len(cf.probabilities) == 3  # original, the expanded {5}, the returned {5, 6}
    assert np.array_equal(cf.output, FILL(image, key))
    assert np.array_equal(cf.output[~cf.mask], image[~cf.mask])


def test_budgets_stop_the_search(grid_scene):
    image, segments, key, predict = grid_scene
    cf = sedc(predict, image, source_class=1, segments=segments, obfuscator=FILL, max_queries=20)
    assert not cf.found and cf.output is None and cf.queries <= 20
    assert cf.regions == [5]  # the best combination seen
    assert np.array_equal(cf.mask, regions_mask(segments, [5]))
    single = sedc(predict, image, source_class=1, segments=segments, obfuscator=FILL, max_regions=1)
    assert not single.found and single.queries == 17


def test_best_first_backtracks_from_a_decoy(grid_scene):
    image, segments, key, _ = grid_scene
    decoy = segments == 0

    def predict(batch):
        # three classes, source 2: masking cell 0 (a decoy) lowers the source score most but moves
        # it to classes 0 and 1 alike, so it never flips; masking both key cells does
        black = (batch[..., :3].max(axis=-1) == 0)
        k = black[:, key].mean(axis=1)
        d = black[:, decoy].mean(axis=1) == 1
        rows = np.where(k[:, None] == 1, [0.9, 0.05, 0.05],
                        np.where(d[:, None], [0.35, 0.35, 0.3], np.where(k[:, None] > 0, [0.1, 0.05, 0.85], [0.05, 0.05, 0.9])))
        return rows

    cf = sedc(predict, image, source_class=2, segments=segments, obfuscator=FILL, max_regions=2)
    # {0} is expanded first, none of {0, r} flips and they cannot grow; then {5} is expanded
    assert cf.found and cf.regions == [5, 6]
    assert cf.queries == 1 + 16 + 15 + 14
    assert [round(row[2], 2) for row in cf.probabilities] == [0.9, 0.3, 0.85, 0.05]


def test_quickshift_by_default_and_deterministic(large_grid_scene):
    image, _, key, predict = large_grid_scene
    segments = quickshift_segments(image)
    first = sedc(predict, image, source_class=1, obfuscator=FILL)
    second = sedc(predict, image, source_class=1, obfuscator=FILL)
    assert first.found
    assert first.regions == second.regions and first.queries == second.queries
    assert np.array_equal(first.mask, regions_mask(segments, first.regions))
    assert (first.mask & key).sum() > 0.5 * key.sum()
    assert np.array_equal(first.output[~first.mask], image[~first.mask])
