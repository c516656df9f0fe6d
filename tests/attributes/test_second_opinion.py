"""The second opinion on re-upload copies of an output (``second_opinion(..., copies=...)``): a word
the OCR reads only on a copy fails the output as one read on the output itself does, and what a copy
shows is mapped back onto the output, where it can be hidden."""

from __future__ import annotations

import numpy as np
import pytest
from text_scenes import draw_text, photo

from safeview.attributes import (
    DETECTORS,
    SECOND_OPINION_COPIES,
    Attribute,
    SecondOpinionModel,
    add_findings,
    detect,
    overlap,
    second_opinion,
)
from safeview.attributes import _onto
from safeview.attributes.detector import Detector
from safeview.obfuscate import obfuscate
from safeview.verify import PERTURBATIONS


@pytest.fixture(scope="module")
def small_word():
    """scikit-image's coffee at 1024² with "LOSER" 10 px tall near the bottom-right corner: on the
    whole frame the OCR reads no text there, on the enlarged bottom-right crop (``crop3``, 1.6×)
    it reads "LOSER" at 0.99 (measured: the same with the word moved 8 px either way, and at 9 and
    11 px)."""
    return draw_text(photo((1024, 1024), "coffee"), "LOSER", (768, 921), 10)


def test_word_legible_only_on_an_enlarged_crop_fails_the_output(ocr_model, small_word):
    image, drawn = small_word
    opinion = second_opinion(image, copies=["crop3"])
    assert opinion.report.unsafe == [] and opinion.report.named("text") == []  # the output alone: nothing read
    assert not opinion.passed and opinion.complete and opinion.copies == ("crop3",)
    verdicts = {v.detector: v for v in opinion.verdicts}
    assert verdicts["ocr"].verdict == "passed" and verdicts["offensive"].verdict == "failed"
    (found,) = verdicts["offensive"].found
    assert found.text == "LOSER" and found.seen_on == "crop3"
    # mapped back onto the output, tight around the word (not the crop's coordinates, not its window)
    assert overlap(drawn, found.area(image.shape[:2])) > 0.95
    ys, xs = np.nonzero(drawn)
    x0, y0, x1, y1 = found.box
    assert xs.min() - 8 <= x0 and x1 <= xs.max() + 9 and ys.min() - 8 <= y0 and y1 <= ys.max() + 9
    assert opinion.failures() == [f'offensive: "LOSER" ({found.score:.2f}) on crop3']
    model = SecondOpinionModel.from_opinion(opinion)
    assert model.copies == ["crop3"] and model.verdicts[1].found[0].seen_on == "crop3" and not model.passed
    # the original's report gains the word, said to be read on the copy only
    (added,) = add_findings(detect(image), opinion).unsafe
    assert added.seen_on == "crop3" and added.text == "LOSER"
    # hidden where the copy's finding was mapped to, the copy reads nothing either
    assert second_opinion(obfuscate(image, found.area(image.shape[:2])), copies=["crop3"]).passed


def test_clean_output_passes_on_every_copy_checked(ocr_model, astronaut):
    opinion = second_opinion(astronaut, copies=SECOND_OPINION_COPIES)
    assert opinion.passed and opinion.complete and opinion.copies == SECOND_OPINION_COPIES
    assert all(run.checked for report in opinion.copy_reports.values() for run in report.runs)
    assert SecondOpinionModel.from_opinion(opinion).copies == list(SECOND_OPINION_COPIES)
    assert "mirror" not in SECOND_OPINION_COPIES and set(SECOND_OPINION_COPIES) < set(PERTURBATIONS)


@pytest.mark.parametrize("copy", ["mirror", "crop1", "crop2", "jpeg"])
def test_what_a_copy_shows_is_mapped_back_onto_the_output(copy):
    """A block's box and mask, found on a copy, land on the block in the output (the block lies
    where all four corner crops overlap)."""
    image = np.zeros((120, 160, 3), np.uint8)
    block = np.zeros(image.shape[:2], bool)
    block[50:70, 62:84] = True  # off the vertical centre line, so a mirrored box lands elsewhere
    image[block] = 255
    seen = PERTURBATIONS[copy](image)[..., 0] > 127
    ys, xs = np.nonzero(seen)
    on_copy = Attribute("offensive_text", 1.0, "test", "v", box=(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), mask=seen)
    back = _onto(on_copy, copy, block.shape)
    assert back.seen_on == copy and overlap(block, back.mask) > 0.9 and overlap(back.mask, block) > 0.9
    box_only = _onto(Attribute("offensive_text", 1.0, "test", "v", box=on_copy.box), copy, block.shape)
    assert np.abs(np.subtract(box_only.box, (62, 50, 84, 70))).max() <= 2


def test_a_detector_that_did_not_run_on_a_copy_leaves_the_output_not_checked(monkeypatch, astronaut):
    class OutputOnly(Detector):
        """Finds nothing on the output and fails on any other image, as a detector might on a copy."""

        name, package, module, sees = "output-only", "numpy", "numpy", ("offensive_text",)

        def build(self, module):
            return module

        def find(self, model, image, found):
            if image is not astronaut:
                raise RuntimeError("copy refused")
            return []

    monkeypatch.setitem(DETECTORS, "output-only", OutputOnly())
    opinion = second_opinion(astronaut, ["output-only"], copies=["jpeg", "crop0"])
    (verdict,) = opinion.verdicts
    assert verdict.verdict == "not checked" and opinion.passed and not opinion.complete  # nothing found, not all looked
    assert verdict.detail.startswith("did not run on jpeg, crop0 (failed: RuntimeError: copy refused")
    with pytest.raises(ValueError, match="unknown perturbation"):
        second_opinion(astronaut, ["output-only"], copies=["rotate"])
