import numpy as np

from safeview.baselines import box_censor, boxes_mask, component_boxes
from safeview.obfuscate import Obfuscator

FILL = Obfuscator("fill")


def test_component_boxes():
    evidence = np.zeros((20, 30), bool)
    evidence[2:5, 3:4] = True
    evidence[4, 4:8] = True  # an L: one component
    evidence[10:12, 20:22] = True
    evidence[12, 22] = True  # touches diagonally: joined with 8-connectivity only
    assert component_boxes(evidence) == [(2, 3, 5, 8), (10, 20, 13, 23)]
    assert component_boxes(evidence, connectivity=1) == [(2, 3, 5, 8), (10, 20, 12, 22), (12, 22, 13, 23)]
    assert component_boxes(evidence, margin=3)[0] == (0, 0, 8, 11)
    mask = boxes_mask(evidence.shape, component_boxes(evidence))
    assert mask.sum() == 3 * 5 + 3 * 3 and (mask | evidence).sum() == mask.sum()


def test_boxes_of_the_evidence_flip_and_cost_safe_pixels(grid_scene):
    image, segments, key, predict = grid_scene
    evidence = key.copy()
    evidence[10:20, 10:20] = False  # cell 5 reduced to its diagonal: its box is still the cell
    evidence[np.arange(10, 20), np.arange(10, 20)] = True
    cf = box_censor(predict, image, evidence, source_class=1, obfuscator=FILL)
    assert cf.found and cf.queries == 2 and cf.regions == [0]
    assert np.array_equal(cf.mask, key)
    assert np.array_equal(cf.output[~cf.mask], image[~cf.mask])
    assert cf.probabilities[0][1] > 0.5 and cf.final_probabilities[0] > 0.5


def test_boxes_that_miss_evidence_do_not_flip(grid_scene):
    image, segments, key, predict = grid_scene
    cf = box_censor(predict, image, segments == 5, source_class=1, obfuscator=FILL)
    assert not cf.found and cf.output is None
    assert np.array_equal(cf.mask, segments == 5)


def test_box_over_two_distant_regions_is_two_boxes(grid_scene):
    image, segments, key, predict = grid_scene
    evidence = np.isin(segments, [0, 15])
    cf = box_censor(predict, image, evidence, source_class=1, obfuscator=FILL)
    assert cf.regions == [0, 1] and np.array_equal(cf.mask, evidence) and not cf.found
