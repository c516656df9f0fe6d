import numpy as np
import pytest

from safeview.verify import PERTURBATIONS, perturbed_copies, verify


def test_copies_keep_the_shape_and_differ(photo):
    copies = perturbed_copies(photo, list(PERTURBATIONS))
    assert len(copies) == 1 + len(PERTURBATIONS) and copies[0] is photo
    for copy in copies[1:]:
        assert copy.shape == photo.shape and copy.dtype == np.uint8 and not np.array_equal(copy, photo)


def test_the_mirror_is_the_reversed_columns(photo):
    rng = np.random.default_rng(0)
    for image in (photo, photo[5:, 3:], rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)):  # views too
        assert np.array_equal(PERTURBATIONS["mirror"](image), image[:, ::-1])


def test_source_window_is_where_each_copy_comes_from(photo):
    """What a detector finds on a copy is mapped back with source_window: it must be the part of
    the image each perturbation shows, stretched over the frame (mirrored for the mirror)."""
    import cv2

    from safeview.verify import source_window

    h, w = photo.shape[:2]
    for name, perturb in PERTURBATIONS.items():
        (x0, y0, x1, y1), mirrored = source_window(name, (h, w))
        if name in ("jpeg", "rescale"):  # the whole frame, degraded in place
            assert ((x0, y0, x1, y1), mirrored) == ((0, 0, w, h), False)
            continue
        part = photo[y0:y1, x0:x1][:, ::-1] if mirrored else photo[y0:y1, x0:x1]
        expected = cv2.resize(np.ascontiguousarray(part), (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(perturb(photo), expected), name
    with pytest.raises(ValueError, match="unknown perturbation"):
        source_window("rotate", (h, w))


def test_margin_and_flagged_models(red_classifier, red_scene):
    image, truth = red_scene
    partly = image.copy()
    ys, xs = np.nonzero(truth)
    partly[ys.min() : ys.min() + 20, xs.min() : xs.max() + 1] = 128  # most of the square hidden
    p = float(red_classifier.unsafe_probability(red_classifier.predict_proba(partly[None]))[0])
    assert 0.0 < p < 0.5, p  # the classifier alone would call it safe
    strict = verify([red_classifier], partly, margin=0.49, perturbations=["jpeg"])
    assert not strict.passed and "red-detector/output" in strict.failures()
    assert strict.required["red-detector"] == pytest.approx(0.01)
    # a model that did not flag the original only has to keep calling it safe
    lenient = verify([red_classifier], partly, margin=0.49, perturbations=["jpeg"], flagged=[])
    assert lenient.passed == all(v <= 0.5 for v in lenient.unsafe_probabilities["red-detector"].values())
    # but it does have to: on the square left visible it fails, at its bar of 1 - threshold
    unflagged = verify([red_classifier], image, margin=0.49, perturbations=["jpeg"], flagged=[])
    assert not unflagged.passed and unflagged.required["red-detector"] == pytest.approx(0.5)
    assert set(strict.unsafe_probabilities["red-detector"]) == {"output", "jpeg"}


def test_unknown_perturbation_and_no_models(photo, red_classifier):
    with pytest.raises(ValueError, match="unknown perturbation"):
        verify([red_classifier], photo, perturbations=["rotate"])
    with pytest.raises(ValueError):
        verify([], photo)


def test_known_results_are_reused_not_recomputed(red_classifier, red_scene):
    image, _ = red_scene
    first = verify([red_classifier], image, perturbations=["jpeg"])

    class Refuses:
        name = red_classifier.name

        def predict_proba(self, batch):  # a model already verified on this image must not run again
            raise AssertionError("classified twice")

    again = verify([Refuses()], image, perturbations=["jpeg"], known=first)
    assert again.unsafe_probabilities == first.unsafe_probabilities and again.passed == first.passed


def test_second_opinion_fails_readable_offensive_text_and_passes_once_blurred():
    from text_scenes import draw_text, photo

    from safeview.attributes import SecondOpinionModel, detect, second_opinion
    from safeview.obfuscate import obfuscate

    image, _ = draw_text(photo(), "LOSER", (20, 120), 24)
    (found,) = detect(image).unsafe
    visible = second_opinion(image)
    assert not visible.passed and visible.complete
    assert {v.detector: v.verdict for v in visible.verdicts} == {"ocr": "passed", "offensive": "failed"}
    assert visible.failures() == [f'offensive: "LOSER" ({found.score:.2f})']
    for style in ("blur", "pixelate"):
        hidden = second_opinion(obfuscate(image, found.area(image.shape[:2]), style=style))
        assert hidden.passed and hidden.complete, (style, hidden.failures())
    model = SecondOpinionModel.from_opinion(visible)
    assert not model.passed and model.verdicts[1].found[0].text == "LOSER"


def test_second_opinion_without_detectors_is_not_checked(monkeypatch):
    import sys

    from text_scenes import draw_text, photo

    from safeview.attributes import second_opinion

    monkeypatch.setitem(sys.modules, "rapidocr", None)
    opinion = second_opinion(draw_text(photo(), "LOSER", (20, 120), 24)[0])
    assert opinion.passed and not opinion.complete  # nothing found, but nothing looked
    assert [v.verdict for v in opinion.verdicts] == ["not checked", "not checked"]
    assert "not installed" in opinion.verdicts[0].detail


def test_early_verification_stops_at_the_first_failure_without_classifying_copies(red_classifier, red_scene):
    """Issue 18: a search candidate whose own unsafe probability is too high fails whatever its
    copies say, so with ``early`` they are neither made nor classified; a pass checks every copy."""
    image, truth = red_scene
    sizes = []
    red_classifier.module.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
    failed = verify([red_classifier], image, early=True)
    assert not failed.passed and failed.unsafe_probabilities["red-detector"].keys() == {"output"}
    assert failed.failures() == ["red-detector/output"] and sizes == [1]
    full = verify([red_classifier], image)
    assert not full.passed and set(full.unsafe_probabilities["red-detector"]) == {"output", *full.perturbations}
    sizes.clear()
    clean = red_scene[0].copy()
    clean[truth] = (0, 120, 0)
    passed = verify([red_classifier], clean, early=True)
    assert passed.passed and set(passed.unsafe_probabilities["red-detector"]) == {"output", *passed.perturbations}
    assert sizes == [1] * (1 + len(passed.perturbations))  # on a CPU the copies go one by one


def test_early_verification_stops_at_the_first_failing_copy_and_tries_the_last_one_first(red_classifier, photo):
    """Issue 18: on a CPU a batch costs what its images cost one by one, so a candidate's copies
    are classified in turn and the first failure ends it; ``first`` (the copy that failed the
    previous candidate) goes before the others. Here only the enlarged top-left corner shows
    enough of a small red patch for the model to fire."""
    image = photo.copy()
    image[4:10, 4:10] = (255, 0, 0)
    sizes = []
    red_classifier.module.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
    full = verify([red_classifier], image)
    assert full.failures() == ["red-detector/crop0"]
    sizes.clear()
    early = verify([red_classifier], image, early=True)
    names = list(full.perturbations)
    assert list(early.unsafe_probabilities["red-detector"]) == ["output", *names[: names.index("crop0") + 1]]
    assert not early.passed and early.failures() == ["red-detector/crop0"] and sizes == [1] * (2 + names.index("crop0"))
    sizes.clear()
    hinted = verify([red_classifier], image, early=True, first="crop0")
    assert list(hinted.unsafe_probabilities["red-detector"]) == ["output", "crop0"] and not hinted.passed
    assert sizes == [1, 1]
    assert hinted.unsafe_probabilities["red-detector"]["crop0"] == full.unsafe_probabilities["red-detector"]["crop0"]


def test_every_model_must_pass_whatever_its_place(red_classifier, red_scene):
    """Verification with several models: one model still calling the output unsafe fails it,
    whether it comes first or last, even when every other model passes it on every copy."""
    from scenes import ColourFragmentDetector

    pink = ColourFragmentDetector.build()  # sees no pink here: passes the red scene everywhere
    image, _ = red_scene
    for models in ([red_classifier, pink], [pink, red_classifier]):
        result = verify(models, image, perturbations=["jpeg", "mirror"])
        assert not verify([pink], image, perturbations=["jpeg", "mirror"]).failures()
        assert not result.passed and result.failures() and all(f.startswith("red-detector/") for f in result.failures())
        assert set(result.unsafe_probabilities) == {"red-detector", "pink-fragment"}


def test_known_results_with_other_perturbations_are_not_reused(red_classifier, photo):
    """``known`` saves the models' forwards only when it checked the same copies: an earlier pass
    on the JPEG copy alone says nothing of the crops, so they are classified and one fails."""
    image = photo.copy()
    image[4:10, 4:10] = (255, 0, 0)  # only the enlarged top-left corner shows it (see above)
    jpeg_only = verify([red_classifier], image, perturbations=["jpeg"])
    assert jpeg_only.passed
    every = verify([red_classifier], image, known=jpeg_only)
    assert set(every.unsafe_probabilities["red-detector"]) == {"output", *PERTURBATIONS}
    assert not every.passed and every.failures() == ["red-detector/crop0"]


def test_a_model_that_gives_no_number_fails_verification(photo):
    """A model whose probabilities come out NaN (an overflow, a broken export) has not called the
    output safe: every check of it fails, early or not, as no number is at most the bar. (A
    :class:`Classifier` refuses to return NaN at all; this is verify's own guard, for any model
    object with ``predict_proba``.)"""
    from scenes import FixedDetector

    fixed = FixedDetector.build((0.0, 0.0), name="broken")

    class Broken:
        name, device = fixed.name, fixed.device
        unsafe_probability = fixed.unsafe_probability

        def predict_proba(self, images):
            return np.full((len(images), 2), np.nan, np.float32)

    broken = Broken()
    for early in (False, True):
        result = verify([broken], photo, perturbations=["jpeg", "mirror"], early=early)
        assert not result.passed and "broken/output" in result.failures(), early
