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


def test_probe_after_ends_a_search_that_cannot_flip_with_one_query(scene):
    """``probe_after``: after that many prefixes short of the flip, the longest is classified; a
    search with no flip in budget then costs ``probe_after + 1`` queries, not ``max_regions``, and
    ends exactly where the full search would (mask, last row)."""
    image, segments, key = scene
    order = [r for r in range(16) if r not in (5, 6)] + [5, 6]  # key regions beyond the budget
    full = greedy_search(red_predict(key), image, segments, order, source_class=1, max_regions=10)
    probed = greedy_search(red_predict(key), image, segments, order, source_class=1, max_regions=10, probe_after=4)
    assert not probed.found and probed.output is None
    assert probed.queries == 1 + 4 + 1  # the original, four prefixes, the longest
    assert probed.regions == full.regions and np.array_equal(probed.mask, full.mask)
    assert len(probed.probabilities) == 6  # the original, the first four prefixes, the longest
    np.testing.assert_allclose(probed.probabilities[:5], full.probabilities[:5])
    np.testing.assert_allclose(probed.probabilities[-1], full.probabilities[-1])


@pytest.mark.parametrize("depth", [2, 4, 5, 6, 9, 10])
def test_probe_after_finds_the_first_flip_of_a_monotone_search(scene, depth):
    """When masking more never brings the decision back, the probed search stops at the same
    prefix as the paper's, with the same rows, and one query more only past ``probe_after``."""
    image, segments, key = scene
    decoys = [r for r in range(16) if r not in (5, 6)]
    order = decoys[: depth - 2] + [5, 6] + decoys[depth - 2 :]  # the flip comes with region 6, at ``depth``
    kw = dict(source_class=1, max_regions=10, prune=False, obfuscator=Obfuscator("fill"), batch_size=1)
    paper = greedy_search(red_predict(key), image, segments, order, **kw)
    probed = greedy_search(red_predict(key), image, segments, order, probe_after=4, **kw)
    assert paper.found and probed.found and paper.depth == depth
    assert probed.regions == paper.regions and np.array_equal(probed.output, paper.output)
    np.testing.assert_allclose(probed.probabilities, paper.probabilities)
    assert probed.queries - paper.queries == (1 if 4 < paper.depth < 10 else 0)


def test_probe_after_takes_a_longest_prefix_that_brings_the_decision_back_as_no_flip(scene):
    """Non-monotone: a flip at prefix 6 that prefix 10 undoes is not found once the probe has run
    (the round ends, as documented); with the probe after 6 or more it is."""
    image, segments, key = scene
    decoys = [r for r in range(16) if r not in (5, 6)]
    order = decoys[:4] + [5, 6] + decoys[4:]

    def back_at_ten(batch):  # unsafe again once 10 regions are masked (region order[9] hidden)
        p = red_predict(key)(batch)
        late = np.asarray(batch)[:, segments == order[9], 0].mean(axis=1) != image[segments == order[9], 0].mean()
        return np.where(late[:, None], [[0.0, 1.0]], p)

    kw = dict(source_class=1, max_regions=10, prune=False, obfuscator=Obfuscator("fill"))
    assert greedy_search(back_at_ten, image, segments, order, **kw).depth == 6
    assert not greedy_search(back_at_ten, image, segments, order, probe_after=4, **kw).found
    assert greedy_search(back_at_ten, image, segments, order, probe_after=6, **kw).depth == 6


def test_a_search_continued_from_a_prefix_is_the_whole_search(scene):
    """``base``: a search over the rest of the order, continued from an unfinished search's last
    prefix, gives what one search over the whole order gives (regions, mask, steps, output)."""
    from safeview.counterfactual import chained

    image, segments, key = scene
    order = [0, 1, 5, 2, 6, 3]
    whole = greedy_search(red_predict(key), image, segments, order, source_class=1, prune=False, max_regions=6)
    first = greedy_search(red_predict(key), image, segments, order, source_class=1, prune=False, max_regions=3)
    assert whole.found and not first.found
    rest = greedy_search(red_predict(key), image, segments, order[3:], source_class=1, prune=False,
                         base=first.mask, original_probabilities=np.asarray(first.probabilities[-1]))
    both = chained(first, rest)
    assert both.found and both.regions == whole.regions == [0, 1, 5, 2, 6]
    assert np.array_equal(both.mask, whole.mask) and np.array_equal(both.output, whole.output)
    np.testing.assert_allclose(both.probabilities, whole.probabilities)
    assert both.queries == first.queries + rest.queries and rest.queries <= 3  # the base was not classified again
    # pruning keeps the base: only the continuation's own regions are dropped
    pruned = greedy_search(red_predict(key), image, segments, order[3:], source_class=1, base=first.mask,
                           original_probabilities=np.asarray(first.probabilities[-1]))
    assert pruned.found and pruned.regions == [6] and np.array_equal(pruned.mask, first.mask | (segments == 6))
    with pytest.raises(ValueError, match="shape"):
        greedy_search(red_predict(key), image, segments, order, source_class=1, base=first.mask[:-1])


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


# --------------------------------------------------------------------------- CSE as one unit


def test_paper_mode_returns_exactly_the_greedy_prefix(red_classifier, red_scene):
    """Paper mode: the top-1, top-2, … prefix at the first flip above 0.5; no completion, no pruning."""
    from safeview.attribute import attribution_map
    from safeview.counterfactual import CSEConfig, cse
    from safeview.segment import segment

    image, _ = red_scene
    params = {"n_segments": 60, "compactness": 10}
    config = CSEConfig(mode="paper", segmentation="slic", segmentation_params=params)
    result = cse(red_classifier, image, config=config)
    # the same steps by hand
    attribution = attribution_map(red_classifier, image, 1)
    labels = segment(image, "slic", **params)
    order = rank_regions(region_scores(attribution, labels))
    blur, prefix = Obfuscator("blur"), []
    for region in order[:10]:
        prefix.append(int(region))
        p_safe = red_classifier.predict_proba(blur(image, regions_mask(labels, prefix))[None])[0, 0]
        if p_safe > 0.5:
            break
    assert result.found and result.regions == prefix and result.completed == []
    assert np.array_equal(result.mask, regions_mask(labels, prefix))
    assert result.search.greedy_regions == prefix  # not pruned


def test_a_flip_short_of_the_margin_classifies_no_copies(red_classifier, red_scene):
    """Issue 18 (no wasted work): the paper's flip that leaves the output above verification's
    bar fails on the output itself, so its seven re-upload copies are never classified; a flip
    past the bar is verified on every copy. ``Safeguard.scan`` still reports every copy."""
    import hashlib

    from safeview.counterfactual import CSEConfig, cse
    from safeview.pipeline import Safeguard
    from safeview.verify import PERTURBATIONS

    image, _ = red_scene
    kw = {"mode": "paper", "segmentation": "slic", "segmentation_params": {"n_segments": 60, "compactness": 10}}
    rows = []
    hook = red_classifier.module.register_forward_hook(
        lambda _m, inputs, _o: rows.extend(hashlib.sha1(r.tobytes()).hexdigest() for r in inputs[0].detach().numpy()))
    try:
        short = cse(red_classifier, image, config=CSEConfig(margin=0.45, **kw))  # the output must fall to 0.05
        searched = len(rows)
        rows.clear()
        past = cse(red_classifier, image, config=CSEConfig(margin=0.3, **kw))
    finally:
        hook.remove()
    probabilities = short.verification.unsafe_probabilities[red_classifier.name]
    assert short.found and not short.verified and list(probabilities) == ["output"] and probabilities["output"] > 0.05
    assert searched == 2 + short.search.greedy_depth  # the classification, the attribution, the prefixes: no copy
    assert past.verified and set(past.verification.unsafe_probabilities[red_classifier.name]) == {"output", *PERTURBATIONS}
    report = Safeguard([red_classifier], margin=0.45, fallback="prefix", **kw).scan(image).verification
    assert not report.passed and set(report.unsafe_probabilities[red_classifier.name]) == {"output", *PERTURBATIONS}


def test_hide_mode_searches_past_the_flip_to_the_margin(red_classifier, red_scene):
    from safeview.counterfactual import CSEConfig, cse

    image, truth = red_scene
    kw = {"segmentation": "slic", "segmentation_params": {"n_segments": 60, "compactness": 10}}
    paper = cse(red_classifier, image, config=CSEConfig(mode="paper", **kw))
    hide = cse(red_classifier, image, config=CSEConfig(margin=0.3, **kw))
    steps = [1 - row[0] for row in hide.search.probabilities]
    assert hide.found and steps[-1] <= 0.2 and all(p > 0.2 for p in steps[:-1])
    assert hide.search.greedy_depth >= paper.search.greedy_depth
    assert hide.verified and hide.mask[truth].mean() >= paper.mask[truth].mean()
    assert hide.mask[truth].mean() > 0.97


def test_completion_takes_the_rest_of_the_object_not_the_background():
    """A ring cut into three same-colour pieces around a hole, a surrounding rim of another colour
    (cut in two, and never looked at by the classifier), on a large background: the search needed
    one piece; completion must take the ring, the hole and the rim, and no background."""
    from safeview.counterfactual import complete_evidence

    h = w = 64
    ys, xs = np.mgrid[:h, :w]
    r = np.hypot(ys - 32, xs - 32)
    segments = np.zeros((h, w), np.int32)  # 0: background
    angle = np.arctan2(ys - 32, xs - 32)
    ring = (r >= 8) & (r < 14)
    segments[ring] = 1 + (np.digitize(angle, [-1.0, 1.0]))[ring]  # pieces 1, 2, 3
    segments[r < 8] = 4  # the hole in the middle
    rim = (r >= 14) & (r < 17)
    segments[rim] = np.where(xs[rim] < 32, 5, 6)  # a rim of another colour, cut in two by the segmentation
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = (40, 120, 40)
    image[ring] = (230, 150, 170)
    image[r < 8] = (120, 70, 50)
    image[(r >= 14) & (r < 17)] = (120, 70, 50)
    attribution = np.where(ring, 1.0, 0.0)
    attribution[segments == 1] = 1.0
    attribution[segments == 2] = 0.6  # weaker evidence, but the same colour as the chosen piece
    attribution[segments == 3] = 0.5
    added, mask = complete_evidence(image, segments, attribution, [1])
    assert set(added) >= {2, 3, 4, 5, 6} and 0 not in added
    assert mask[segments > 0].all() and not mask[segments == 0].any()
    grown = complete_evidence(image, segments, attribution, [1], dilate_radius=2)[1]
    assert grown[segments > 0].all() and 0 < grown[segments == 0].mean() < 0.1


def _ring_around_a_centre():
    """A brown centre (region 1, what the flip needed) inside a pink ring (region 2) on a lilac
    wall (region 0), and a brown patch (region 3) of the centre's colour touching it: an image,
    its segments and an attribution where the centre scores, the patch a little."""
    h = w = 64
    ys, xs = np.mgrid[:h, :w]
    r = np.hypot(ys - 30, xs - 30)
    segments = np.zeros((h, w), np.int32)
    segments[r < 14] = 2
    segments[26:34, 36:50] = 3  # cuts into the ring and touches the centre
    segments[r < 8] = 1
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = (190, 172, 205)
    image[segments == 2] = (232, 150, 172)
    image[(segments == 1) | (segments == 3)] = (120, 72, 50)
    attribution = np.where(segments == 1, 1.0, 0.02)
    attribution[segments == 3] = 0.3  # over completion's colour floor, under its bar
    return image, segments, attribution


def test_completion_takes_fragments_only_for_what_the_classifier_sees():
    """Pieces cut out of a large region (``fragments``) never join for their colour or their size
    alone — the wall they were cut from has that colour, and its pieces ring anything — but they
    do join when they score: the same scene with and without the fragment rule; the wall itself
    joins only when it scores as much as what the flip needed."""
    from safeview.counterfactual import complete_evidence

    image, segments, attribution = _ring_around_a_centre()
    plain = set(complete_evidence(image, segments, attribution, [1])[0])
    assert {2, 3} <= plain and 0 not in plain  # a rim for its size, a same-colour neighbour
    cut = set(complete_evidence(image, segments, attribution, [1], fragments={0, 2, 3})[0])
    assert not cut & {0, 2, 3}
    attribution[segments == 2] = 0.6  # the classifier looks at the ring too
    scored = set(complete_evidence(image, segments, attribution, [1], fragments={0, 2, 3})[0])
    assert 2 in scored and 0 not in scored
    # what is left of a cut region (a wall) joins only for its attribution, never as a neighbour
    assert 3 not in complete_evidence(image, segments, attribution, [1], walls={3})[0]
    assert 2 in complete_evidence(image, segments, attribution, [1])[0]  # the ring as a scored surround…
    assert 2 not in complete_evidence(image, segments, attribution, [1], walls={2})[0]  # …unless it is a wall
    attribution[segments == 3] = 0.9
    assert 3 in complete_evidence(image, segments, attribution, [1], walls={3})[0]


def test_a_ring_the_segmentation_merged_into_the_wall_is_hidden():
    """Traced leaks of the leak-free default (issue 13): BASS merged the stand-in's ring into a
    large background region, the demo model flipped once the centre was hidden, and the ring
    stayed visible. Cutting large regions at their colour edge before completion hides it; without
    the cut (``split=0``) these images leak."""
    from safeview.classify import load_classifier
    from safeview.counterfactual import CSEConfig, cse
    from safeview.synth import make_sample

    clf = load_classifier("demo-sexual")
    recalls = {}
    for split in (0.0, CSEConfig().split):
        recalls[split] = []
        for seed in (79_000_080, 79_000_100, 79_000_133):
            sample = make_sample("sexual", True, seed=seed, size=256)
            result = cse(clf, sample.image, config=CSEConfig(split=split))
            assert result.verified
            recalls[split].append(result.mask[sample.mask].mean())
    assert min(recalls[CSEConfig().split]) > 0.9
    assert max(recalls[0.0]) < 0.8


def test_the_cut_leaves_protected_pixels_and_hides_the_ring():
    """A protected box inside the wall a ring was merged into (the wall, 28 % of the image, is
    the box's twin and stays over a quarter): the cut never touches the protected region, the box
    stays bit-identical, and the ring is still hidden."""
    from safeview.classify import load_classifier
    from safeview.counterfactual import CSEConfig, cse
    from safeview.synth import make_sample

    sample = make_sample("sexual", True, seed=79_000_133, size=256)
    protected = np.zeros(sample.mask.shape, bool)
    protected[210:246, 210:246] = True
    assert not (protected & sample.mask).any()
    result = cse(load_classifier("demo-sexual"), sample.image, config=CSEConfig(), protected=protected)
    assert result.verified and result.mask[sample.mask].mean() > 0.9
    assert (result.output[protected] == sample.image[protected]).all()


def test_a_second_instance_is_hidden_too(red_classifier, photo):
    """The 000017 kind of case: hiding one of two copies flips the classifier while the other
    stays fully visible. An output reported safe must hide both."""
    from safeview.counterfactual import CSEConfig, cse

    image, truth = photo.copy(), np.zeros(photo.shape[:2], bool)
    truth[8:30, 8:30] = truth[60:82, 60:82] = True
    image[truth] = (255, 0, 0)
    for mode in ("paper", "hide"):
        result = cse(red_classifier, image, config=CSEConfig(mode=mode, segmentation="slic",
                                                           segmentation_params={"n_segments": 30, "compactness": 10}))
        recall = result.mask[truth].mean()
        if mode == "hide":
            assert not result.verified or recall > 0.9, f"reported safe with {recall:.0%} of the content hidden"
            assert result.verified


def test_fragment_classifier_does_not_leak_the_rest_of_the_content():
    """A classifier that keys on one colour of the two-colour stand-in flips when part of that
    colour is hidden; the leak-free default must still hide the stand-in, where paper mode leaks."""
    from safeview.counterfactual import CSEConfig, cse
    from safeview.leakage import leakage
    from safeview.synth import make_sample
    from scenes import ColourFragmentDetector

    clf = ColourFragmentDetector.build()
    recalls = {"paper": [], "hide": []}
    for seed in range(100, 115):
        sample = make_sample("sexual", True, seed=seed, size=256)
        if clf.predict_proba(sample.image[None])[0, 1] < 0.5:
            continue
        for mode in recalls:
            result = cse(clf, sample.image, config=CSEConfig(mode=mode))
            if result.verified:
                recalls[mode].append(leakage(result.mask, sample.mask)["recall"])
    assert len(recalls["hide"]) >= 6
    assert np.median(recalls["hide"]) >= 0.9
    assert np.median(recalls["paper"]) < np.median(recalls["hide"])


def test_a_search_short_of_the_margin_goes_on_from_the_evidence_left(red_classifier, photo):
    """A model that fires while enough of the content is visible, and a budget that ends before
    the content is covered: hide mode recomputes the attribution on its last prefix and goes on
    over what is left, so the output hides all of the content instead of falling back to the
    whole image. Without it (``reattribute=0``) nothing is found."""
    from safeview.counterfactual import CSEConfig, cse

    image, truth = photo.copy(), np.zeros(photo.shape[:2], bool)
    for y, x in ((6, 6), (6, 74), (74, 6), (74, 74)):  # four red patches in the corners
        truth[y : y + 14, x : x + 14] = True
    image[truth] = (255, 0, 0)
    kw = {"segmentation": "slic", "segmentation_params": {"n_segments": 60, "compactness": 10}, "max_regions": 2}
    cut_short = cse(red_classifier, image, config=CSEConfig(reattribute=0, **kw))
    assert not cut_short.found and cut_short.output is None
    result = cse(red_classifier, image, config=CSEConfig(**kw))
    assert result.found and result.verified
    assert result.search.greedy_depth > 2  # it went past the first budget
    assert result.mask[truth].mean() > 0.97
    assert result.mask.mean() < 2 * truth.mean()  # the content, not the whole image


def test_no_continuation_once_the_prefix_covers_most_of_the_image(red_classifier, photo):
    """A model that no obfuscation satisfies (the whole image is the content): a search whose
    budget ends with little of the image masked goes on (two more budgets); one whose prefix
    already covers most of the image falls back at once, without paying more forwards and
    attributions for an output that would hide nearly everything anyway."""
    from safeview.counterfactual import REATTRIBUTE_BELOW, CSEConfig, cse

    image = photo.copy()
    image[..., 0], image[..., 1:] = 255, image[..., 1:] // 8  # red everywhere: blurred, still red
    kw = {"segmentation": "slic", "segmentation_params": {"n_segments": 60, "compactness": 10}}
    small = cse(red_classifier, image, config=CSEConfig(max_regions=2, **kw))
    assert not small.found and small.search.greedy_depth == 6  # 2 + 2 more rounds of 2
    n = int(small.segments.max()) + 1
    large = cse(red_classifier, image, config=CSEConfig(max_regions=n - 2, **kw))
    first = large.search.greedy_regions[: n - 2]
    assert regions_mask(large.segments, first).mean() >= REATTRIBUTE_BELOW
    assert not large.found and large.search.greedy_depth == n - 2


def test_traced_images_short_of_the_margin_are_hidden_not_given_up():
    """Two sexual images of the reproduction's set where the demo model still fires on the
    stand-in's last fragment after hide mode's 16 regions (fine segmentations, 114 and 117
    regions): with the re-attribution they are verified with the stand-in hidden."""
    from safeview.classify import load_classifier
    from safeview.counterfactual import CSEConfig, cse
    from safeview.leakage import leakage
    from safeview.synth import make_sample

    clf = load_classifier("demo-sexual")
    for seed in (1_000_067, 1_000_068):
        sample = make_sample("sexual", True, seed=seed, size=256)
        assert not cse(clf, sample.image, config=CSEConfig(reattribute=0)).found
        result = cse(clf, sample.image)
        assert result.verified, seed
        assert leakage(result.mask, sample.mask)["recall"] > 0.95, seed
        assert result.obfuscated_fraction < 0.5, seed


def test_config_is_validated_once():
    from safeview.counterfactual import CSEConfig

    for bad in ({"mode": "fast"}, {"margin": 0.5}, {"threshold": 1.0}, {"style": "smudge"}, {"perturbations": ("rot",)},
                {"completion_ratio": 0}, {"max_regions": 0}, {"reattribute": -1}, {"segmentation": "x"}, {"attribution": "x"}, {"split": 1.5}):
        with pytest.raises(ValueError):
            CSEConfig(**bad)
    config = CSEConfig(segmentation_params={"n": 20})
    with pytest.raises(TypeError):
        config.segmentation_params["n"] = 3  # frozen: a config cannot change after it was validated


def test_the_search_budget_defaults_to_the_modes():
    """Hide mode's stricter stop gets a larger budget than the paper's 10 regions; paper and
    minimal keep the paper's; a budget given explicitly wins, also through ScanConfig."""
    from safeview.config import ScanConfig
    from safeview.counterfactual import DEFAULT_MAX_REGIONS, CSEConfig

    assert CSEConfig().max_regions == DEFAULT_MAX_REGIONS["hide"] == 16
    assert CSEConfig(mode="paper").max_regions == CSEConfig(mode="minimal").max_regions == 10
    assert CSEConfig(mode="hide", max_regions=4).max_regions == 4
    assert ScanConfig(mode="paper").cse.max_regions == 10 and ScanConfig().cse.max_regions == 16
    assert ScanConfig(max_regions=7).cse.max_regions == 7


def test_completion_morphology_is_scipys():
    """Completion's closing and dilation (OpenCV's) give scipy's binary closing (on a copy padded
    beyond the disk) and dilation with the same disk, masks touching the image's edge included."""
    from scipy import ndimage

    from safeview.counterfactual import _closed, _dilated, _disk

    rng = np.random.default_rng(5)
    for trial in range(12):
        shape = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        mask = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=int(rng.integers(1, 4)))
        mask[:, : int(rng.integers(0, 3))] = True  # content at the edge
        for radius in (1, 2, 4, 7):
            pad = radius + 1
            closed = ndimage.binary_closing(np.pad(mask, pad), structure=_disk(radius))[pad:-pad, pad:-pad]
            assert np.array_equal(_closed(mask, radius), closed), (trial, radius)
            assert np.array_equal(_dilated(mask, radius), ndimage.binary_dilation(mask, structure=_disk(radius))), (trial, radius)


def test_hide_mode_extends_the_search_while_verification_fails(red_classifier, photo):
    """The search stops once the output is past the margin, but small patches in two corners, which
    the completion does not reach, still show on the enlarged corners a re-upload's crop makes:
    verification fails, and the search goes on, a region at a time, until the output passes."""
    from safeview.counterfactual import CSEConfig, cse

    image = photo.copy()
    square, corners = np.zeros(photo.shape[:2], bool), np.zeros(photo.shape[:2], bool)
    square[40:60, 40:60], corners[4:10, 4:10], corners[86:92, 86:92] = True, True, True
    image[square | corners] = (255, 0, 0)  # a corner patch alone shows only on its crop (test_verify)
    result = cse(red_classifier, image, config=CSEConfig())
    assert result.found and not result.search.mask[corners].all()  # the search left a patch
    assert result.verified and result.mask[square | corners].all()
    assert len(result.regions) > len(result.search.regions) > 1


def test_verifiers_must_call_the_output_safe_with_the_margin_too(red_classifier, red_scene):
    """``cse(verifiers=…)``: other models that flagged the image must also put the output at most
    ``1 - threshold - margin``. A verifier at 0.4 unsafe on every image (below the flip threshold,
    above the margin's bar) leaves the output not verified, and says so; without it, or with one
    that calls everything safe, the same search is verified."""
    import math

    from safeview.counterfactual import CSEConfig, cse
    from scenes import FixedDetector

    image, truth = red_scene
    config = CSEConfig(segmentation="slic", segmentation_params={"n_segments": 60, "compactness": 10})
    alone = cse(red_classifier, image, config=config)
    assert alone.verified and alone.mask[truth].mean() > 0.9
    lukewarm = FixedDetector.build((0.0, math.log(0.4 / 0.6)), name="lukewarm", category="cyberbullying")
    held = cse(red_classifier, image, config=config, verifiers=[lukewarm])
    assert not held.verified and held.verification.required["lukewarm"] == pytest.approx(0.2)
    assert any(f.startswith("lukewarm/") for f in held.verification.failures())
    calm = FixedDetector.build((3.0, -3.0), name="calm", category="cyberbullying")
    agreed = cse(red_classifier, image, config=config, verifiers=[calm])
    assert agreed.verified and "calm" in agreed.verification.unsafe_probabilities
    assert np.array_equal(agreed.mask, alone.mask)
