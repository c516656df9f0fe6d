"""The evidence rationale grounded in detected attributes: it names what a detector saw, where it
lies relative to the obfuscated regions, what was not checked, and answers only the fine-grained
questions a detector can answer."""

from __future__ import annotations

import numpy as np
from text_scenes import draw_text, photo

from safeview.attributes import Attribute, AttributeReport, DetectorRun, detect
from safeview.rationale import rationale
from safeview.rationale.evidence import attribute_sentences, evidence_rationale
from safeview.rationale.prompts import load_templates

SHAPE = (100, 200)
OCR_RUN = DetectorRun("ocr", "rapidocr", "ran", ("text",), "rapidocr 3.10.0", 0.4)
OFFENSIVE_RUN = DetectorRun("offensive", "alt-profanity-check", "ran", ("offensive_text",), "alt-profanity-check 1.9.1", 0.05)
HATE_QUESTION = "Is there any text in the image that might be considered hate speech?"


def _text(text, box, score=0.97):
    return Attribute("text", score, "ocr", "rapidocr 3.10.0", box=box, text=text)


def _offensive(text, box, score=0.93):
    return Attribute("offensive_text", score, "offensive", "alt-profanity-check 1.9.1", box=box, text=text)


def _region(y0, y1, x0, x1):
    mask = np.zeros(SHAPE, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _report(*attributes, runs=(OCR_RUN, OFFENSIVE_RUN)):
    return AttributeReport(SHAPE, tuple(attributes), tuple(runs))


def test_found_attribute_is_placed_in_its_region():
    report = _report(_text("LOSER", (10, 10, 60, 30)), _offensive("LOSER", (10, 10, 60, 30)), _text("HELLO", (100, 60, 160, 80)))
    ev = attribute_sentences(report, regions=[_region(50, 100, 0, 50), _region(0, 40, 0, 80)], categories=["cyberbullying"])
    assert 'The text "LOSER" (OCR 0.97; offensive, 0.93) lies in the second obfuscated region.' in ev.sentences
    assert 'The OCR also read "HELLO" (0.97), which the offensive-language detector does not flag.' in ev.sentences
    assert ev.answers[HATE_QUESTION].startswith("Yes") and '"LOSER" (0.93)' in ev.answers[HATE_QUESTION]
    unanswered = [q for q, a in ev.answers.items() if a is None]
    assert len(ev.answers) == 4 and len(unanswered) == 3  # gestures, weapons, aggression: no detector


def test_partly_covered_and_visible_attributes():
    split = _report(_text("LO", (10, 10, 40, 30), 0.99), _text("SER", (50, 10, 90, 30), 0.95), _offensive("LO SER", (10, 10, 90, 30)))
    (sentence,) = [s for s in attribute_sentences(split, regions=[_region(0, 40, 0, 45)]).sentences if s.startswith("The text")]
    assert sentence == 'The text "LO SER" (OCR 0.95, read in 2 boxes; offensive, 0.93) is 44% covered by the first obfuscated region; the rest is left visible.'
    outside = attribute_sentences(_report(_offensive("IDIOT", (150, 70, 190, 90))), regions=[_region(0, 40, 0, 45)])
    assert "lies outside the obfuscated regions and is left visible" in outside.sentences[0]
    nothing_hidden = attribute_sentences(_report(_offensive("IDIOT", (150, 70, 190, 90))))
    assert "lies in the bottom-right of the image" in nothing_hidden.sentences[0]


def test_no_sentence_claims_what_no_detector_saw():
    not_installed = DetectorRun("offensive", "alt-profanity-check", "not installed", ("offensive_text",), detail="alt-profanity-check is not installed")
    ev = attribute_sentences(_report(_text("LOSER", (10, 10, 60, 30)), runs=(OCR_RUN, not_installed)))
    assert ev.sentences[0] == 'The OCR read "LOSER" (0.97), not checked for offensive wording.'
    assert "Not checked: offensive wording (the offensive detector not installed" in ev.sentences[1]
    assert ev.answers[HATE_QUESTION] is None and all(a is None for a in ev.answers.values())
    assert not any("flag" in s or "lies" in s for s in ev.sentences)
    # with every detector missing, nothing is claimed but what was not checked
    missing = (DetectorRun("ocr", "rapidocr", "not installed", ("text",), detail="x"),
               DetectorRun("offensive", "alt-profanity-check", "skipped", ("offensive_text",), detail="y"))
    bare = attribute_sentences(_report(runs=missing))
    assert [s.split(":")[0] for s in bare.sentences[:2]] == ["Not checked", "Not checked"]
    assert len(bare.answers) == sum(len(c.questions) for c in load_templates().categories.values()) == 9


def test_no_text_answers_the_text_question():
    ev = attribute_sentences(_report(), categories=["cyberbullying"])
    assert ev.answers[HATE_QUESTION] == "No: the OCR read no text."


def test_evidence_rationale_grounded_end_to_end():
    image, _ = draw_text(photo(), "LOSER", (20, 120), 24)
    report = detect(image)
    (found,) = report.unsafe
    mask = found.area(image.shape[:2])
    evidence = {"cyberbullying": {"model": "m", "found": True, "verified": True, "depth": 1, "completed": 0,
                                  "fraction": float(mask.mean()), "after": 0.1, "mask": mask}}
    result = rationale(image, {"cyberbullying": 0.9}, evidence, attributes=report)
    ocr = report.named("text")[0].score
    assert f'The text "LOSER" (OCR {ocr:.2f}; offensive, {found.score:.2f}) lies in the first obfuscated region.' in result.text
    assert result.evidence["attributes"]["attributes"][0]["text"] == "LOSER"
    assert result.evidence["questions"][HATE_QUESTION].startswith("Yes")
    assert "attribute detectors" in result.text


def test_without_attributes_the_rationale_is_unchanged():
    evidence = {"sexual": {"model": "m", "found": False}}
    plain = evidence_rationale(SHAPE, {"sexual": 0.8}, evidence)
    assert "Not checked" not in plain.text and "attributes" not in plain.evidence
    assert plain.text.endswith("(classifier scores and a counterfactual), not a visual description of the image.")
    safe = evidence_rationale(SHAPE, {"sexual": 0.1}, {})
    assert safe.text == "No category was flagged: sexual 10%. This statement is based on classifier scores, not a visual description."
    flagged_text = evidence_rationale(SHAPE, {"sexual": 0.1}, {}, attributes=_report(_offensive("IDIOT", (150, 70, 190, 90))))
    assert 'The text "IDIOT"' in flagged_text.text and flagged_text.evidence["questions"] == {}


def test_second_opinion_sentence_names_only_the_copies_it_checked():
    """The rationale says which re-upload copies the detectors read (the others only the models
    checked), what they still found and on which copy, and which detectors did not run on all."""
    output = {"verified": True, "fallback": None, "models": ["m"], "perturbations": ["jpeg", "mirror", "crop3"]}
    opinion = {"passed": True, "complete": True, "copies": ["jpeg", "crop3"], "grown": False,
               "detectors": ["ocr", "offensive"], "not_checked": [], "found": []}
    text = evidence_rationale(SHAPE, {"cyberbullying": 0.9}, {"_output": {**output, "second_opinion": opinion}}).text
    assert ("The attribute detectors (ocr, offensive) found no unsafe attribute on the output and its re-upload copies"
            " (jpeg, crop3); the mirror copy was checked by the models only.") in text
    found = [{"name": "offensive_text", "text": "LOSER", "seen_on": "crop3"}, {"name": "offensive_text", "text": "LOSER", "seen_on": None}]
    failed = {**opinion, "passed": False, "found": found}
    text = evidence_rationale(SHAPE, {"cyberbullying": 0.9}, {"_output": {**output, "verified": False, "fallback": "full",
                                                                          "second_opinion": failed}}).text
    assert 'still found "LOSER" (read on the crop3 copy and the output itself).' in text and "found no unsafe" not in text
    partial = {**opinion, "detectors": ["ocr"], "not_checked": ["offensive"], "copies": []}
    text = evidence_rationale(SHAPE, {"cyberbullying": 0.9}, {"_output": {**output, "second_opinion": partial}}).text
    assert "(ocr) found no unsafe attribute on the output only; the jpeg, mirror, crop3 copies were checked by the models only;" \
        " the offensive detector did not run on all of them." in text
    assert "attribute detectors" not in evidence_rationale(SHAPE, {"cyberbullying": 0.9}, {"_output": output}).text
