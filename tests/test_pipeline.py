import json

import jsonschema
import numpy as np
import pytest

from safeview.pipeline import Safeguard
from safeview.schema import ScanResult, json_schema
from safeview.verify import PERTURBATIONS


def test_red_square_found_and_obfuscated_minimally(red_classifier, red_scene):
    image, truth = red_scene
    assert red_classifier.unsafe_probability(red_classifier(image[None]))[0] > 0.9
    guard = Safeguard([red_classifier], segmentation="slic", segmentation_params={"n_segments": 40, "compactness": 10})
    result = guard.scan(image)
    assert result.verdict == "unsafe"
    (cf,) = result.counterfactuals
    assert cf.found and 1 <= cf.depth <= cf.greedy_depth <= 10
    mask = result.mask.to_mask()
    # the obfuscation covers the planted square and far less than the whole image
    assert mask[truth].mean() > 0.9
    assert result.obfuscated_fraction < 0.35
    assert result.obfuscated_safe is True and result.output_status == "verified" and result.fallback is None
    v = result.verification
    assert v.passed and v.margin == 0.3 and {"jpeg", "rescale", "mirror"} <= set(v.perturbations)
    assert all(p <= 0.2 for p in v.unsafe_probabilities["red-detector"].values())
    assert result.unsafe_probability_after["cyberbullying"] <= 0.2
    out = result.artifacts.obfuscated
    assert np.array_equal(out[~mask], image[~mask])  # safe pixels bit-identical
    assert "Obfuscating" in result.rationale.text and "cyberbullying" in result.rationale.text


def test_safe_image_is_left_alone(red_classifier, photo):
    result = Safeguard([red_classifier]).scan(photo)
    assert result.verdict == "safe" and result.mask is None and result.counterfactuals == []
    assert result.artifacts.obfuscated is None


def test_result_validates_against_json_schema(red_classifier, red_scene, tmp_path):
    result = Safeguard([red_classifier]).scan(red_scene[0])
    document = json.loads(result.model_dump_json())
    jsonschema.validate(document, json_schema())
    again = ScanResult.model_validate(document)
    assert np.array_equal(again.mask.to_mask(), result.mask.to_mask())


def test_deterministic(red_classifier, red_scene):
    a = Safeguard([red_classifier]).scan(red_scene[0])
    b = Safeguard([red_classifier]).scan(red_scene[0])
    assert a.counterfactuals[0].regions == b.counterfactuals[0].regions
    assert a.mask == b.mask


def test_fallback_when_no_counterfactual(red_classifier, red_scene):
    image, _ = red_scene
    result = Safeguard([red_classifier], max_regions=1, segmentation="slic",
                       segmentation_params={"n_segments": 200, "compactness": 10}, fallback="full").scan(image)
    (cf,) = result.counterfactuals
    assert not cf.found  # one small region cannot remove the whole square
    # the whole image is obfuscated, and labelled as what it is: not verified
    assert result.obfuscated_fraction == 1.0 and result.obfuscated_safe is False
    from safeview.obfuscate import Obfuscator

    # and the output's pixels are that: the whole image blurred, not the search's partial output
    assert np.array_equal(result.artifacts.obfuscated, Obfuscator("blur")(image, np.ones(image.shape[:2], bool)))
    assert result.output_status == "not verified" and result.fallback == "full"
    assert result.verification is not None and not result.verification.passed
    assert result.output_suffix == "not-verified.png"
    text = result.rationale.text
    assert "No set of up to" in text and "whole image is obfuscated" in text and "not verified" in text
    assert "untouched" not in text and "bit-identical" not in text and "lies in those regions" not in text


def test_a_model_that_fails_never_lets_an_image_pass_as_safe(red_classifier, photo):
    """A model that raises has not called the image safe: the scan fails, whatever the other
    models say (here the red detector, for which the photo is benign); none is called safe."""
    from scenes import FixedDetector

    guard = Safeguard([red_classifier, FixedDetector.build(error=RuntimeError("out of memory"))], attributes=())
    with pytest.raises(RuntimeError, match="out of memory"):
        guard.scan(photo)
    outcomes = guard.scan_many([photo, photo[::-1].copy()])
    assert all(isinstance(o, RuntimeError) and "out of memory" in str(o) for o in outcomes), outcomes


def test_a_model_failing_on_one_image_fails_that_image_only(red_classifier, photo):
    """A model that gives NaN (or raises) on one image of a batch fails that image with a one-line
    :class:`ModelError` naming the image and the model; the batch's other images are scanned as
    they would be alone, and no NaN reaches a result (the JSON would carry it as null)."""
    import torch
    from torch import nn

    from safeview.classify import Classifier, Preprocess
    from safeview.errors import ModelError

    class NanOnWhite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            logits = self.fc(x.mean(dim=(2, 3)))
            white = x.mean(dim=(1, 2, 3)) > 0.99
            return torch.where(white[:, None], torch.full_like(logits, float("nan")), logits)

    picky = Classifier.from_module(NanOnWhite(), ["safe", "unsafe"], ["unsafe"], name="picky", category="sexual",
                                   preprocess=Preprocess(resize=(32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    white = np.full((64, 64, 3), 255, np.uint8)
    guard = Safeguard([red_classifier, picky], attributes=())
    outcomes = guard.scan_many([photo, white, photo[::-1].copy()])
    assert isinstance(outcomes[1], ModelError)
    assert "picky" in str(outcomes[1]) and "NaN" in str(outcomes[1]) and "\n" not in str(outcomes[1])
    for got, image in ((outcomes[0], photo), (outcomes[2], photo[::-1].copy())):
        alone = guard.scan(image)
        assert isinstance(got, ScanResult) and got.verdict == alone.verdict
        assert np.isfinite([c.unsafe_probability for c in got.categories]).all()
    with pytest.raises(ModelError, match="picky"):
        guard.scan(white)


def test_bad_configuration(red_classifier):
    for bad in ({"style": "smudge"}, {"fallback": "maybe"}, {"mode": "fast"}, {"attribution": "magic"},
                {"segmentation": "scissors"}, {"margin": 0.6}, {"perturbations": ["rotate"]}):
        with pytest.raises(ValueError):
            Safeguard([red_classifier], **bad)
    with pytest.raises(ValueError, match="no models"):
        Safeguard([])  # an empty model set would call everything safe


def test_bass_guided_by_attribution_isolates_the_square(red_classifier, red_scene):
    image, truth = red_scene
    result = Safeguard([red_classifier], segmentation="bass").scan(image)
    (cf,) = result.counterfactuals
    mask = result.mask.to_mask()
    assert cf.found and result.obfuscated_safe
    assert mask[truth].mean() > 0.9
    assert mask.mean() < 2.0 * truth.mean()  # the obfuscation follows the square, not a grid cell


def test_large_image_is_searched_on_a_working_copy_and_the_mask_mapped_back(red_classifier, red_scene):
    import cv2

    small, truth_small = red_scene
    scale = 5  # a large photo: CSE searches a copy of at most working_side pixels a side
    image = cv2.resize(small, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    truth = cv2.resize(truth_small.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST).astype(bool)
    result = Safeguard([red_classifier], segmentation="bass", working_side=128).scan(image)
    mask, output = result.mask.to_mask(), result.artifacts.obfuscated
    assert mask.shape == image.shape[:2] and result.counterfactuals[0].mask.size == tuple(image.shape[:2])
    assert mask[truth].mean() > 0.99 and np.array_equal(mask, result.counterfactuals[0].mask.to_mask())
    assert mask.mean() < 3.0 * truth.mean()
    assert np.array_equal(output[~mask], image[~mask])  # the rest of the full-resolution original, bit-identical
    assert result.obfuscated_safe and result.verification.passed  # verified on the full-resolution output
    full = Safeguard([red_classifier], segmentation="bass", working_side=None).scan(image)
    assert full.obfuscated_safe and full.mask.to_mask()[truth].mean() > 0.9


def test_the_full_resolution_output_is_verified_itself_not_its_working_copy(red_classifier, red_scene, monkeypatch):
    """The working copy's verification says nothing of the full-resolution output the mask is
    mapped onto: that output is classified (with its copies) before it is called safe."""
    import hashlib

    image = np.kron(red_scene[0], np.ones((3, 3, 1), np.uint8))  # 288 px, searched on a 128-px copy
    seen = []
    real = red_classifier.predict_proba

    def predict_proba(images):
        seen.extend(hashlib.sha1(np.ascontiguousarray(i).tobytes()).hexdigest() for i in images if i.shape == image.shape)
        return real(images)

    monkeypatch.setattr(red_classifier, "predict_proba", predict_proba)
    result = Safeguard([red_classifier], working_side=128, attributes=()).scan(image)
    assert result.obfuscated_safe
    output = result.artifacts.obfuscated
    assert hashlib.sha1(output.tobytes()).hexdigest() in seen
    for name in result.verification.perturbations:
        assert hashlib.sha1(PERTURBATIONS[name](output).tobytes()).hexdigest() in seen, name


def test_cse_segmentation_params_scale_bass_cells():
    from safeview.counterfactual import cse_segmentation_params

    assert cse_segmentation_params("bass", (256, 256), {})["n"] == 60
    assert cse_segmentation_params("bass", (64, 64), {})["n"] == 15
    assert cse_segmentation_params("bass", (256, 256), {"n": 20})["n"] == 20
    assert cse_segmentation_params("slic", (256, 256), {}) == {}


def test_scan_many_matches_scan_and_isolates_bad_inputs(red_classifier, red_scene, photo):
    from safeview.errors import ImageError

    guard = Safeguard([red_classifier])
    results = guard.scan_many([red_scene[0], b"not an image", photo])
    assert isinstance(results[1], ImageError)
    for got, image in ((results[0], red_scene[0]), (results[2], photo)):
        alone = guard.scan(image)
        assert got.verdict == alone.verdict and got.mask == alone.mask
        assert got.categories[0].unsafe_probability == pytest.approx(alone.categories[0].unsafe_probability, abs=1e-6)
    with pytest.raises(ImageError):
        guard.scan_many([b"not an image"], return_exceptions=False)


def test_unverified_output_is_never_written_as_safe(red_classifier, red_scene, tmp_path):
    """The CLI writes ``.safe.png`` only for a verified output; the fallback is ``.not-verified.png``."""
    from PIL import Image
    from typer.testing import CliRunner

    from safeview.cli import app

    image, _ = red_scene
    src = tmp_path / "scene.png"
    Image.fromarray(image).save(src)
    guard = Safeguard([red_classifier], max_regions=1, segmentation="slic", segmentation_params={"n_segments": 200, "compactness": 10})
    result = guard.scan(src)
    assert result.obfuscated_safe is False
    # the same through the command line, with a checkpoint of the same detector
    out = tmp_path / "out"
    import safeview.pipeline as pipeline

    original = pipeline.load_model_set
    pipeline.load_model_set = lambda spec, device="cpu": [red_classifier]
    try:
        run = CliRunner().invoke(app, ["scan", str(src), "--out", str(out), "--segmentation", "slic", "--margin", "0.45"])
    finally:
        pipeline.load_model_set = original
    assert run.exit_code == 1, run.output  # the image is unsafe
    assert "unsafe not-verified" in run.stdout
    assert not list(out.glob("*.safe.png"))
    (written,) = list(out.glob("*.not-verified.png"))
    record = json.loads(next(out.glob("scene-*.json")).read_text())
    assert record["obfuscated_safe"] is False and record["output_status"] == "not verified"
    assert record["outputs"]["obfuscated"] == str(written)


def test_second_opinion_hides_offensive_text_the_classifier_did_not_need(red_classifier, tmp_path):
    """The classifier flips once its red square is hidden; the OCR still reads "LOSER" elsewhere in
    the output, so the second opinion extends the mask over the word and checks again."""
    pytest.importorskip("rapidocr")
    from text_scenes import draw_text, photo

    from safeview.attributes import SECOND_OPINION_COPIES

    image, word = draw_text(photo(), "LOSER", (20, 200), 24)
    square = np.zeros(image.shape[:2], bool)
    square[30:70, 140:180] = True
    image[square] = (255, 0, 0)
    result = Safeguard([red_classifier], segmentation="bass").scan(image)
    opinion = result.verification.second_opinion
    mask = result.mask.to_mask()
    assert [a.text for a in result.attributes.attributes if a.name == "offensive_text"] == ["LOSER"]
    assert opinion is not None and opinion.passed and result.obfuscated_safe
    assert mask[word].mean() > 0.95 and mask[square].mean() > 0.9  # both hidden
    assert np.array_equal(result.artifacts.obfuscated[~mask], image[~mask])
    assert "LOSER" in result.rationale.text
    from safeview.report import write_report

    page = write_report([{"result": json.loads(result.model_dump_json()), "assets": {"categories": {}}}], tmp_path / "r.html").read_text()
    copies = ", ".join(SECOND_OPINION_COPIES)  # the detectors also read the re-upload copies, the mirror aside
    assert opinion.copies == list(SECOND_OPINION_COPIES) and f"and its re-upload copies ({copies})" in result.rationale.text
    assert "the mirror copy was checked by the models only" in result.rationale.text
    assert "“LOSER”" in page and f"second opinion on the output and its copies ({copies}): passed" in page  # what was read
    off = Safeguard([red_classifier], segmentation="bass", attributes=()).scan(image)
    assert off.verification.second_opinion is None and off.attributes is None
    assert off.mask.to_mask()[word].mean() < 0.5  # the classifier alone leaves the word readable


def test_second_opinion_on_a_copy_hides_what_only_the_copy_shows(red_classifier, monkeypatch):
    """A stand-in detector reads a magenta mark as offensive text only when it is at least 13 px
    tall (as the OCR reads small words only when large enough). The mark is 10 px tall on the
    output and 16 px on the enlarged bottom-right crop: the second opinion on that copy fails the
    output, its finding is mapped back, hidden and reported as read on that copy only. Checking
    the output alone leaves the mark visible and calls the output safe."""
    from text_scenes import photo

    from safeview import pipeline
    from safeview.attributes import DETECTORS, Attribute
    from safeview.attributes.detector import Detector

    class MarkReader(Detector):
        name, package, module, sees = "mark", "numpy", "numpy", ("offensive_text",)

        def build(self, module):
            return module

        def find(self, model, image, found):
            ys, xs = np.nonzero((image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] > 200))
            if ys.size == 0 or ys.max() - ys.min() + 1 < 13:
                return []
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            return [Attribute("offensive_text", 0.99, self.name, self.version(), box=box, text="MARK")]

    monkeypatch.setitem(DETECTORS, "mark", MarkReader())
    image = photo()
    square, mark = np.zeros(image.shape[:2], bool), np.zeros(image.shape[:2], bool)
    square[30:70, 20:60] = True
    mark[190:200, 180:210] = True  # only the bottom-right crop (crop3) holds it
    image[square], image[mark] = (255, 0, 0), (255, 0, 255)
    result = Safeguard([red_classifier], segmentation="bass", attributes=("mark",)).scan(image)
    opinion, mask = result.verification.second_opinion, result.mask.to_mask()
    assert result.obfuscated_safe and opinion.passed and opinion.copies == list(pipeline.SECOND_OPINION_COPIES)
    assert mask[mark].all() and mask[square].mean() > 0.9  # the mark is hidden too
    (read,) = [a for a in result.attributes.attributes if a.name == "offensive_text"]
    assert read.text == "MARK" and read.seen_on == "crop3"  # the original gains what the copy showed
    assert '"MARK" (read only on the crop3 copy of the output; offensive, 0.99) lies in the second obfuscated region' in result.rationale.text
    assert "once the obfuscated area was grown over what they had found" in result.rationale.text

    monkeypatch.setattr(pipeline, "SECOND_OPINION_COPIES", ())  # the output alone
    alone = Safeguard([red_classifier], segmentation="bass", attributes=("mark",)).scan(image)
    assert alone.obfuscated_safe and alone.verification.second_opinion.copies == []
    assert not alone.mask.to_mask()[mark].any() and alone.attributes.attributes == []  # left readable on a crop
    assert "found no unsafe attribute on the output only; the jpeg, rescale, mirror, crop0, crop1, crop2, crop3 copies" \
        " were checked by the models only" in alone.rationale.text


def test_an_output_a_detector_still_reads_is_not_called_safe(red_classifier, red_scene, monkeypatch):
    """The models pass the output, but a detector still reads offensive text on it after the
    obfuscated area was grown over what it found: the output is not verified."""
    from safeview.attributes import DETECTORS, Attribute
    from safeview.attributes.detector import Detector

    class Stubborn(Detector):  # reads the same word wherever it looks, hidden or not
        name, package, module, sees = "stubborn", "numpy", "numpy", ("offensive_text",)

        def build(self, module):
            return module

        def find(self, model, image, found):
            return [Attribute("offensive_text", 0.99, self.name, self.version(), box=(0, 0, 8, 8), text="MARK")]

    monkeypatch.setitem(DETECTORS, "stubborn", Stubborn())
    result = Safeguard([red_classifier], attributes=("stubborn",)).scan(red_scene[0])
    assert result.verification.passed and not result.verification.second_opinion.passed
    assert result.obfuscated_safe is False and result.output_status == "not verified" and result.output_suffix == "not-verified.png"


# -- protected regions (safeview.protect): evidence kept visible -----------------------------------
def _box(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_protected_region_beside_the_content_stays_bit_identical(red_classifier, red_scene):
    image, truth = red_scene
    guard = Safeguard([red_classifier])
    free = guard.scan(image).mask.to_mask()
    box = _box(truth.shape, 30, 4, 56, 44)
    assert (free & box).any()  # unprotected, the obfuscation reaches into the box
    result = guard.scan(image, protect=[{"box": [30, 4, 56, 44], "label": "face"}])
    mask = result.mask.to_mask()
    assert result.obfuscated_safe and mask[truth].mean() > 0.99 and not (mask & box).any()
    (kept,) = result.protected
    assert kept.label == "face" and kept.source == "user" and kept.kept == 1.0 and kept.pixels == box.sum()
    assert np.array_equal(result.artifacts.obfuscated[box], image[box])
    assert "face (marked by the user) was left visible" in result.rationale.text


def test_content_inside_a_protected_region_is_hidden_and_said_so(red_classifier, red_scene):
    image, truth = red_scene
    box = _box(truth.shape, 50, 4, 70, 44)  # holds part of the square and part of the photo
    result = Safeguard([red_classifier]).scan(image, protect=[box])
    mask = result.mask.to_mask()
    assert result.obfuscated_safe and mask[truth].mean() > 0.99
    (kept,) = result.protected
    assert 0.0 < kept.kept < 1.0
    # only the content's part of the protected region was obfuscated
    assert np.array_equal(result.artifacts.obfuscated[box & ~truth], image[box & ~truth])
    assert "had to obfuscate" in result.rationale.text and "could not be hidden otherwise" in result.rationale.text


def test_protecting_everything_still_hides_the_content(red_classifier, red_scene):
    image, truth = red_scene
    result = Safeguard([red_classifier]).scan(image, protect=[np.ones(truth.shape, bool)])
    mask = result.mask.to_mask()
    assert result.obfuscated_safe and mask[truth].mean() > 0.99 and result.obfuscated_fraction < 0.35
    assert result.protected[0].kept < 1.0


def test_protection_holds_at_full_resolution_through_the_working_copy(red_classifier):
    from skimage import data, transform

    image = (transform.resize(data.astronaut(), (300, 300), anti_aliasing=True) * 255).astype(np.uint8)
    truth = _box((300, 300), 180, 30, 255, 105)
    image[truth] = (255, 0, 0)
    box = _box((300, 300), 140, 20, 180, 120)  # touches the square's left edge
    result = Safeguard([red_classifier], working_side=64).scan(image, protect=[box])
    assert result.obfuscated_safe and result.mask.to_mask()[truth].mean() > 0.99
    assert result.protected[0].kept == 1.0


def test_protect_faces_keeps_a_detected_face(red_classifier):
    from skimage import data, transform

    image = (transform.resize(data.astronaut(), (256, 256), anti_aliasing=True) * 255).astype(np.uint8)
    truth = _box((256, 256), 160, 20, 200, 60)  # beside her face (x 85..145, y 25..90 at this size)
    image[truth] = (255, 0, 0)
    result = Safeguard([red_classifier], protect_faces=True).scan(image)
    faces = [p for p in result.protected if p.source == "faces"]
    assert faces and all(p.label == "face" and p.detector for p in faces)
    assert result.obfuscated_safe and result.mask.to_mask()[truth].mean() > 0.99
    assert all(p.kept == 1.0 for p in faces)
    assert Safeguard([red_classifier]).scan(image).protected == []  # only when asked


def test_protect_needs_one_entry_per_source(red_classifier, red_scene):
    with pytest.raises(ValueError, match="one per source"):
        Safeguard([red_classifier]).scan_many([red_scene[0]], protect=[None, None])


def test_the_part_of_the_content_inside_a_protected_box_is_still_hidden(photo):
    # the classifier flips once the pink outside the box is hidden; the pink inside it is the same
    # content (same colour, next to what was masked), so it must be hidden too, not kept as evidence
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from scenes import ColourFragmentDetector

    from skimage import transform

    image = (transform.resize(photo, (128, 128), anti_aliasing=True) * 255).astype(np.uint8)
    truth = _box((128, 128), 60, 40, 100, 80)
    image[truth] = (232, 150, 172)
    clf = ColourFragmentDetector.build(fraction=0.05)
    box = _box((128, 128), 85, 30, 125, 90)  # covers the square's right part and the photo beside it
    result = Safeguard([clf], style="fill").scan(image, protect=[box])  # fill: a blurred flat square stays pink
    assert result.obfuscated_safe
    mask = result.mask.to_mask()
    assert mask[truth].mean() > 0.99
    kept = result.protected[0]
    evidence = box & ~truth
    assert 0.0 < kept.kept < 1.0 and (result.artifacts.obfuscated[evidence] == image[evidence]).all(axis=1).mean() > 0.99


def test_a_protected_face_that_looks_like_the_content_is_kept(photo):
    # a face-like tile touching the content, whose oval has the content's very colour: the
    # classifier's attribution and the colour both say "content", but the tile's own edge breaks the
    # seam, so it is evidence beside the content and must stay bit-identical
    import sys
    from pathlib import Path

    import cv2

    sys.path.insert(0, str(Path(__file__).parent))
    from scenes import ColourFragmentDetector

    from skimage import transform

    pink = (232, 150, 172)
    image = (transform.resize(photo, (128, 128), anti_aliasing=True) * 255).astype(np.uint8)
    truth = _box((128, 128), 20, 40, 60, 80)
    image[truth] = pink
    box = _box((128, 128), 60, 40, 100, 80)  # touches the square's right edge
    image[box] = (205, 205, 190)
    cv2.ellipse(image, (80, 60), (8, 6), 0, 0, 360, pink, -1)  # a "face" of the content's colour, too small to flag
    clf = ColourFragmentDetector.build(colour=pink, fraction=0.05)
    result = Safeguard([clf], style="fill").scan(image, protect=[box])  # fill: a blurred flat square stays pink
    assert result.obfuscated_safe and result.mask.to_mask()[truth].mean() > 0.99
    assert result.protected[0].kept == 1.0
    assert np.array_equal(result.artifacts.obfuscated[box], image[box])


def _forward_log(classifiers):
    """Hooks recording, per model, every input row forwarded: (digest, whether with gradients)."""
    import hashlib

    log = []

    def hook(module, inputs, _output):
        x = inputs[0]
        for row in x.detach().float().cpu().numpy():
            log.append((id(module), hashlib.sha1(row.tobytes()).hexdigest(), x.requires_grad))

    return log, [c.module.register_forward_hook(hook) for c in classifiers]


def test_no_input_is_forwarded_twice_by_a_model(red_classifier, red_scene, photo):
    """Issue 18: classification, search, completion's re-check and verification never repeat a
    forward on the same input; the only repeat is the gradient forward of the attribution on an
    image the model already classified (a prediction carries no gradients). The third image repeats
    the first (a duplicate upload): its predictions all come from the first's, and only its two
    attributions (original, re-check) are computed again."""
    from scenes import ColourFragmentDetector

    pink = ColourFragmentDetector.build()
    image, _ = red_scene
    plain = photo.copy()
    plain[60:90, 8:40] = (232, 150, 172)  # content for the second model only
    log, handles = _forward_log([red_classifier, pink])
    try:
        results = Safeguard([red_classifier, pink]).scan_many([image, plain, image.copy()])
    finally:
        for h in handles:
            h.remove()
    assert all(r.verdict == "unsafe" for r in results)
    seen, repeats = set(), []
    for model, digest, grad in log:
        if (model, digest) in seen:
            repeats.append(grad)
        seen.add((model, digest))
    assert all(repeats), "a prediction was computed twice for the same input"
    flagged = sum(len(r.counterfactuals) for r in results)
    assert 0 < len(repeats) <= 2 * flagged


def test_the_obfuscated_frame_is_computed_once_per_image(red_classifier, red_scene, monkeypatch):
    """Issue 18: the search tries many masks, completion and verification more; the blurred frame
    they take pixels from is computed once per image obfuscated, not once per query."""
    from safeview import obfuscate

    calls = []
    real = obfuscate._blurred
    monkeypatch.setattr(obfuscate, "_blurred", lambda image, *a, **k: calls.append(image.shape) or real(image, *a, **k))
    result = Safeguard([red_classifier]).scan(red_scene[0])
    assert result.verdict == "unsafe" and result.counterfactuals[0].queries > 3
    assert calls == [red_scene[0].shape]
    calls.clear()
    big = np.kron(red_scene[0], np.ones((12, 12, 1), np.uint8))  # above the working side: CSE on a copy
    result = Safeguard([red_classifier]).scan(big)
    assert result.obfuscated_safe and len(calls) == 2  # the working copy's frame, then the original's


def test_content_beside_benign_padding_is_found_searched_and_verified_in_windows(red_classifier, red_scene, photo, tmp_path):
    """A 5:1 image, the content joined with two copies of a photo on each side: squashed whole, the
    model misses it; in windows it is flagged, and an output called safe is safe in every window."""
    from PIL import Image

    from safeview.windows import Windowed

    image, truth = red_scene
    wide = np.concatenate([photo, photo, image, photo, photo], axis=1)
    wide_truth = np.zeros(wide.shape[:2], bool)
    wide_truth[:, 2 * photo.shape[1]: 3 * photo.shape[1]] = truth
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    result = Safeguard([red_classifier]).scan(path)
    assert result.verdict == "unsafe" and result.mask.to_mask()[wide_truth].mean() > 0.9 and result.input.windows >= 2
    assert result.obfuscated_safe  # found and verified in the windows, not by blurring all of it
    assert result.obfuscated_fraction < 0.5
    assert Windowed(red_classifier).predict_proba(result.artifacts.obfuscated[None])[0][1] <= 0.2


def test_content_hidden_under_transparent_pixels_is_not_passed_as_safe(red_classifier, red_scene, photo, tmp_path):
    """A PNG whose alpha hides the content (onto white it shows nothing; a re-encoder that drops the
    alpha shows the red square): the scan classifies every rendering and scans the most unsafe one."""
    from PIL import Image

    image, truth = red_scene
    hidden = tmp_path / "hidden.png"
    Image.fromarray(np.dstack([image, np.where(truth, 0, 255).astype(np.uint8)]), "RGBA").save(hidden)
    result = Safeguard([red_classifier]).scan(hidden)
    assert result.verdict == "unsafe" and result.input.rendering == "alpha dropped"
    assert result.mask.to_mask()[truth].mean() > 0.9
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)]), "RGBA").save(opaque)
    plain = Safeguard([red_classifier]).scan(opaque)
    assert plain.verdict == "safe" and plain.input.rendering is None
    in_memory = Safeguard([red_classifier]).scan(np.dstack([image, np.where(truth, 0, 255).astype(np.uint8)]))
    assert in_memory.verdict == "unsafe" and in_memory.input.rendering == "alpha dropped"  # the library API, the same


def test_content_only_in_a_later_frame_of_an_animation_is_not_passed_as_safe(red_classifier, red_scene, photo, tmp_path):
    """An animated image whose first frame is benign and whose fifth shows the content: the models
    classify its sampled frames, and the scan's verdict, CSE and output are the most unsafe frame's."""
    from PIL import Image

    image, truth = red_scene
    benign = [Image.fromarray(np.roll(photo, 2 * i, axis=1)) for i in range(7)]  # distinct, or the writer merges them
    frames = [*benign[:4], Image.fromarray(image), *benign[4:]]
    path = tmp_path / "anim.png"  # APNG: lossless frames, so the red square stays saturated
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = Safeguard([red_classifier]).scan(path)
    assert result.input.frames == 8 and result.input.frames_checked == 8 and result.input.frame_gap == 0
    assert result.input.frame == 4 and result.verdict == "unsafe"
    assert result.mask.to_mask()[truth].mean() > 0.9
    from scenes import FixedDetector

    # every model's view of the frames counts, not the first model's alone (the same in every frame)
    assert Safeguard([FixedDetector.build((2.0, -2.0)), red_classifier], attributes=()).scan(path).input.frame == 4
    from safeview.report import report_assets, write_report

    record = json.loads(result.model_dump_json())
    page = write_report([{"result": record, "assets": report_assets(record, tmp_path)}], tmp_path / "report.html").read_text()
    assert "animated: frame 5 of 8 shown, the most unsafe of the 8 checked (every frame)" in page
    still = tmp_path / "still.png"
    Image.fromarray(photo).save(still)
    plain = Safeguard([red_classifier]).scan(still)
    assert plain.verdict == "safe" and plain.input.frame == 0 and plain.input.frames_checked == 1


def test_regions_and_depth_count_what_completion_added_and_the_rationale_says_so():
    """The schema's ``regions`` are the search's then the completed ones and ``depth`` counts both;
    the rationale's counts follow (the search's share is never negative). A demo image whose
    content completion grows (synth seed 7000000: two search regions, three completed)."""
    from safeview.classify import load_classifier
    from safeview.synth import make_sample

    sample = make_sample("sexual", True, seed=7_000_000, size=256)
    result = Safeguard([load_classifier("demo-sexual")], attributes=()).scan(sample.image)
    (cf,) = result.counterfactuals
    assert cf.verified and cf.completed, "the scene should need evidence completion"
    assert cf.regions[len(cf.regions) - len(cf.completed):] == cf.completed and cf.depth == len(cf.regions)
    assert len(set(cf.regions)) == len(cf.regions)  # completion adds regions the search had not chosen
    searched = cf.depth - len(cf.completed)
    assert searched >= cf.greedy_depth >= 1
    text = result.rationale.text
    assert f"Obfuscating {cf.depth} regions" in text
    assert f"the search needed {searched} and evidence completion added {len(cf.completed)}" in text
