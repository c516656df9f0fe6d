import numpy as np
import pytest

from safeview.baselines import lime_counterfactual
from safeview.errors import SafeViewError
from safeview.obfuscate import Obfuscator

pytest.importorskip("lime")
FILL = Obfuscator("fill")


def test_masks_the_top_positive_superpixels_until_the_flip(grid_scene):
    image, segments, key, predict = grid_scene
    cf = lime_counterfactual(predict, image, source_class=1, segments=segments, num_samples=50, obfuscator=FILL)
    assert cf.found
    assert sorted(cf.regions) == [5, 6] and cf.greedy_regions == cf.regions  # LIME ranks the key cells first
    assert np.array_equal(cf.mask, key)
    assert cf.queries >= 50 + 1 + 2  # LIME's samples, the original, the prefixes
    assert cf.final_probabilities[0] > 0.5
    assert np.array_equal(cf.output, FILL(image, key))
    assert np.array_equal(cf.output[~cf.mask], image[~cf.mask])


def test_seeded(grid_scene):
    image, segments, _, predict = grid_scene
    # a noisy classifier makes LIME's weights depend on its samples
    def noisy(batch):
        p = predict(batch)[:, 1] * 0.6 + 0.4 * batch[:, :20, :20, 1].mean(axis=(1, 2)) / 255
        return np.stack([1 - p, p], axis=1)

    runs = [lime_counterfactual(noisy, image, source_class=1, segments=segments, num_samples=30, seed=s, obfuscator=FILL) for s in (3, 3)]
    assert runs[0].regions == runs[1].regions and runs[0].probabilities == runs[1].probabilities


def test_quickshift_by_default(large_grid_scene):
    image, _, key, predict = large_grid_scene
    cf = lime_counterfactual(predict, image, source_class=1, num_samples=60, obfuscator=FILL)
    assert cf.found and (cf.mask & key).sum() > 0.5 * key.sum()
    assert cf.depth <= 10
    assert np.array_equal(cf.output[~cf.mask], image[~cf.mask])


def test_rejects_gapped_labels(grid_scene):
    image, segments, _, predict = grid_scene
    with pytest.raises(SafeViewError):
        lime_counterfactual(predict, image, source_class=1, segments=segments * 2, num_samples=10)
