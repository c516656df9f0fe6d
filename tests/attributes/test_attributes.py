"""The attribute layer on real, benign inputs: words drawn by code onto scikit-image's photos, read
by the real OCR and judged by the real offensive-language model."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from fresh import run_fresh
from text_scenes import draw_text, photo

from safeview.attributes import (
    DETECTORS,
    Attribute,
    AttributeReport,
    AttributeReportModel,
    DetectorRun,
    detect,
    overlap,
)
from safeview.attributes.offensive import _reading_order


def _texts(report: AttributeReport, name: str = "text") -> list[str]:
    return [a.text.upper() for a in report.named(name)]


def test_drawn_word_is_read_where_it_was_drawn_and_judged_offensive(ocr_model, loser):
    image, drawn = loser
    report = detect(image)
    assert [r.status for r in report.runs] == ["ran", "ran"]
    (text,) = report.named("text")
    assert text.text == "LOSER" and text.score > 0.9 and text.detector == "ocr"
    assert text.version.startswith("rapidocr ") and "PP-OCR" in text.version
    assert overlap(drawn, text.area(image.shape[:2])) > 0.95  # the box holds the drawn word
    x0, y0, x1, y1 = text.box
    ys, xs = np.nonzero(drawn)
    assert x0 <= xs.min() + 3 and xs.max() - 3 <= x1 and y0 <= ys.min() + 3 and ys.max() - 3 <= y1
    (offensive,) = report.unsafe
    assert offensive.name == "offensive_text" and offensive.text == "LOSER" and offensive.score > 0.9
    assert offensive.box == text.box and report.unchecked == {}


def test_no_text_no_text_attribute(ocr_model, astronaut):
    report = detect(astronaut)
    assert report.attributes == () and all(r.checked for r in report.runs)
    assert report.checked == {"text", "offensive_text"}


def test_benign_text_is_read_but_not_offensive(ocr_model, astronaut):
    image, _ = draw_text(astronaut, "HELLO", (20, 120), 24)
    report = detect(image)
    assert _texts(report) == ["HELLO"] and report.unsafe == []


def test_word_split_across_two_boxes_is_judged_joined(ocr_model):
    # on a plain canvas: over the astronaut's suit the OCR reads stray letters after "SER" on
    # some builds (opencv 5.1: "SERT"), which tests the photo, not the joining
    canvas = np.full((224, 224, 3), 128, np.uint8)
    image, first = draw_text(canvas, "LO", (20, 120), 24)
    image, second = draw_text(image, "SER", (100, 120), 24)
    report = detect(image)
    assert sorted(_texts(report)) == ["LO", "SER"]  # two boxes, neither offensive alone
    (offensive,) = report.unsafe
    assert offensive.text.replace(" ", "") == "LOSER"
    assert overlap(first | second, offensive.area(image.shape[:2])) > 0.95


@pytest.mark.parametrize("angle, height", [(25, 24), (0, 14)])
def test_rotated_and_small_text(ocr_model, astronaut, angle, height):
    image, drawn = draw_text(astronaut, "IDIOT", (40, 160), height, angle=angle)
    report = detect(image)
    (offensive,) = report.unsafe
    assert offensive.text == "IDIOT" and overlap(drawn, offensive.area(image.shape[:2])) > 0.9


def test_real_printed_text_in_a_bundled_scan_is_read_and_is_not_offensive(ocr_model):
    """scikit-image's scanned page (real printed text, not drawn by us): lines of it are read, in
    their boxes, and none of that benign prose is judged offensive."""
    from skimage import data

    page = np.stack([data.page()] * 3, -1).astype(np.uint8)
    report = detect(page)
    texts = [a.text for a in report.named("text")]
    assert any("segmentation" in t for t in texts) and any("background" in t for t in texts)
    assert all(0 <= a.box[0] < a.box[2] <= page.shape[1] and 0 <= a.box[1] < a.box[3] <= page.shape[0] for a in report.named("text"))
    assert not report.unsafe


def test_larger_image(ocr_model):
    image, drawn = draw_text(photo((512, 384)), "LOSER", (40, 200), 40)
    (offensive,) = detect(image).unsafe
    assert overlap(drawn, offensive.area(image.shape[:2])) > 0.95


def test_not_installed_is_not_checked_never_absent(monkeypatch, loser):
    image, _ = loser
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # what an import of a missing package does
    report = detect(image)
    runs = {r.name: r for r in report.runs}
    assert runs["ocr"].status == "not installed" and "pip install" in runs["ocr"].detail
    assert runs["offensive"].status == "skipped" and "ocr" in runs["offensive"].detail
    assert report.attributes == () and set(report.unchecked) == {"text", "offensive_text"}
    assert report.checked == set()


def test_offensive_model_not_installed_leaves_text_read(monkeypatch, ocr_model, loser):
    image, _ = loser
    monkeypatch.setitem(sys.modules, "profanity_check", None)
    report = detect(image)
    assert _texts(report) == ["LOSER"] and report.unsafe == []
    assert set(report.unchecked) == {"offensive_text"}
    assert report.run("offensive").status == "not installed"


def test_without_text_the_offensive_model_is_not_loaded_but_its_absence_still_shows(monkeypatch, ocr_model, astronaut):
    """Issue 18: with no text read there is nothing to judge, so the text classifier (scikit-learn:
    1.1 s to import) is not loaded (checked in a fresh interpreter); a missing package is still
    reported as not installed, never as a check that ran."""
    code = (
        "import sys, skimage.data\n"
        "from safeview.attributes import detect\n"
        "report = detect(skimage.data.astronaut()[::2, ::2].copy())\n"
        "assert report.run('offensive').status == 'ran' and report.attributes == (), report\n"
        "assert 'profanity_check' not in sys.modules and 'sklearn' not in sys.modules\n"
    )
    run_fresh(code)
    monkeypatch.setitem(sys.modules, "profanity_check", None)
    assert detect(astronaut).run("offensive").status == "not installed"


def test_failed_detector_is_reported_as_failed(monkeypatch, loser):
    image, _ = loser

    def broken(self, model, image, found):
        raise RuntimeError("model file damaged")

    monkeypatch.setattr(type(DETECTORS["ocr"]), "find", broken)
    report = detect(image)
    assert report.run("ocr").status == "failed" and "model file damaged" in report.run("ocr").detail
    assert report.run("offensive").status == "skipped" and set(report.unchecked) == {"text", "offensive_text"}


def test_offensive_model_of_another_scikit_learn_is_failed_not_absent(monkeypatch, tmp_path, ocr_model, loser):
    """alt-profanity-check unpickles its model at import; with another scikit-learn than the one
    that wrote it, scikit-learn warns, and the detector is reported failed (its words unchecked)
    rather than run on a model that may not load right. The OCR's reading stays. (A model already
    converted to arrays and cached no longer needs scikit-learn: here the cache is empty.)"""
    import importlib
    import warnings

    from sklearn.exceptions import InconsistentVersionWarning

    from safeview.attributes import detector

    monkeypatch.setenv("SAFEVIEW_CACHE_DIR", str(tmp_path / "empty-cache"))
    detector._loaded.cache_clear()

    real = importlib.import_module

    def mismatched(name, *args, **kwargs):
        if name == "profanity_check":
            warnings.warn(InconsistentVersionWarning(estimator_name="LinearSVC", current_sklearn_version="0.0", original_sklearn_version="1.9.1"))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(detector.importlib, "import_module", mismatched)
    image, _ = loser
    try:
        report = detect(image)
    finally:
        detector._loaded.cache_clear()
    run = report.run("offensive")
    assert run.status == "failed" and "InconsistentVersionWarning" in run.detail
    assert _texts(report) == ["LOSER"] and report.unsafe == [] and set(report.unchecked) == {"offensive_text"}


def test_the_converted_text_model_scores_what_scikit_learn_does():
    """The shipped model as arrays gives scikit-learn's probabilities on its whole vocabulary (each
    word alone, and runs of words with case, accents and punctuation); so does the conversion of
    another model fitted here, and a model with settings the arrays cannot reproduce (word pairs)
    is not converted."""
    import profanity_check
    from profanity_check import profanity_check as inner
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    from safeview.attributes.offensive import LinearText

    shipped = LinearText.from_sklearn(inner.vectorizer, inner.model)
    words = list(shipped.vocabulary)
    texts = words + [" ".join(words[i : i + 7]).upper() + " éü, !" for i in range(0, len(words), 7)]
    np.testing.assert_allclose(shipped(texts), profanity_check.predict_prob(texts), rtol=0, atol=1e-9)
    again = LinearText.from_arrays(shipped.arrays())
    np.testing.assert_array_equal(again(texts[:500]), shipped(texts[:500]))

    docs = ["you are great", "what a lovely day", "you stupid fool", "shut up idiot", "thanks a lot", "go away loser"] * 4
    labels = [0, 0, 1, 1, 0, 1] * 4
    vectorizer = TfidfVectorizer(stop_words="english").fit(docs)
    fitted = CalibratedClassifierCV(LinearSVC(), cv=3).fit(vectorizer.transform(docs), labels)
    probes = ["you fool", "lovely LOVELY day", "idiot loser", "nothing known", ""]
    np.testing.assert_allclose(LinearText.from_sklearn(vectorizer, fitted)(probes),
                               fitted.predict_proba(vectorizer.transform(probes))[:, 1], rtol=0, atol=1e-12)
    pairs = TfidfVectorizer(ngram_range=(1, 2)).fit(docs)
    assert LinearText.from_sklearn(pairs, CalibratedClassifierCV(LinearSVC(), cv=3).fit(pairs.transform(docs), labels)) is None


def test_a_cached_text_model_is_scored_without_scikit_learn_and_a_damaged_one_is_made_again(tmp_path, loser):
    """Issue 18: once converted, the offensive-text model loads from the cache in a fresh process
    without importing scikit-learn or the package (1.2 s) and still finds the drawn insult; a
    damaged cache file is converted again."""
    np.save(tmp_path / "loser.npy", loser[0])
    check = (
        "import sys, numpy as np\n"
        "from safeview.attributes import detect\n"
        f"report = detect(np.load({str(tmp_path / 'loser.npy')!r}))\n"
        "print([a.text for a in report.unsafe], 'sklearn' in sys.modules)\n"
    )
    cache = tmp_path / "cache"
    assert run_fresh(check, SAFEVIEW_CACHE_DIR=str(cache)).split() == ["['LOSER']", "True"]  # converted now
    (cached,) = cache.glob("profanity-*.npz")
    assert run_fresh(check, SAFEVIEW_CACHE_DIR=str(cache)).split() == ["['LOSER']", "False"]  # read back
    cached.write_bytes(cached.read_bytes()[:100])
    assert run_fresh(check, SAFEVIEW_CACHE_DIR=str(cache)).split() == ["['LOSER']", "True"]  # damaged: converted again
    assert run_fresh(check, SAFEVIEW_CACHE_DIR=str(cache)).split() == ["['LOSER']", "False"]


def test_detectors_load_lazily():
    code = "import sys, safeview.attributes, safeview.rationale; print(sorted({'rapidocr', 'profanity_check'} & set(sys.modules)))"
    assert run_fresh(code).strip() == "[]"


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown attribute detector"):
        detect(np.zeros((8, 8, 3), np.uint8), ["nudity"])
    with pytest.raises(ValueError, match="uint8 RGB"):
        detect(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="box or a mask"):
        Attribute("text", 0.9, "ocr", "v")


def test_offensive_alone_brings_the_ocr_it_needs(ocr_model, loser):
    report = detect(loser[0], ["offensive"])
    assert [r.name for r in report.runs] == ["ocr", "offensive"] and len(report.unsafe) == 1


def test_reading_order_groups_lines():
    def t(box):
        return Attribute("text", 1.0, "ocr", "v", box=box, text="x")

    boxes = [t((100, 12, 150, 30)), t((0, 60, 40, 80)), t((0, 10, 60, 32))]
    assert _reading_order(boxes) == [[2, 0], [1]]


def test_json_model_round_trip(loser):
    mask = np.zeros(loser[0].shape[:2], bool)
    mask[5:9, 5:9] = True
    report = AttributeReport(
        (224, 224),
        (Attribute("offensive_text", 0.9, "offensive", "v", mask=mask, text="LOSER"),),
        (DetectorRun("offensive", "alt-profanity-check", "ran", ("offensive_text",), "v", 0.1),
         DetectorRun("ocr", "rapidocr", "not installed", ("text",), detail="missing")),
    )
    model = AttributeReportModel.from_report(report)
    again = AttributeReportModel.model_validate_json(model.model_dump_json())
    assert again == model and again.unchecked == ["text"] and again.attributes[0].unsafe
    assert np.array_equal(again.attributes[0].mask.to_mask(), mask)
