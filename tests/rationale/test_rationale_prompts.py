"""Control code, the prior (conditioned prompt from editable templates), keyword scoring, the
dispatcher's evidence backend, make-data records and the rating sheet."""

import csv
import json
import os

import numpy as np
import pytest

from safeview.errors import SafeViewError
from safeview.rationale import BACKENDS, rationale
from safeview.rationale.control import ControlCode, control_code
from safeview.rationale.evaluate import evaluate, make_records, summarise, write_sheet
from safeview.rationale.prompts import attribute_match, conditioned_prompt, keyword_hits, load_templates


class FixedClassifier:
    """A classifier stand-in with a fixed unsafe probability (what the pipeline's classifiers expose)."""

    def __init__(self, category, p):
        self.category, self.p = category, p

    def predict_proba(self, batch):
        return np.tile([1 - self.p, self.p], (len(batch), 1))

    def unsafe_probability(self, probs):
        return probs[:, 1]


def test_control_code_comes_from_the_classifiers():
    image = np.zeros((8, 8, 3), np.uint8)
    code = control_code([FixedClassifier("sexual", 0.2), FixedClassifier("self_harm", 0.8)], image)
    assert code.probabilities == pytest.approx({"sexual": 0.2, "self_harm": 0.8})
    assert list(code.flagged) == ["self_harm"]
    vec = code.vector(("sexual", "cyberbullying", "self_harm"))
    assert vec.dtype == np.float32 and vec.tolist() == pytest.approx([0.2, 0.0, 0.8, 0.0, 0.0, 1.0])


def test_paper_question_set():
    t = load_templates()
    assert t.generic == ("What is happening in the image?", "What are the people doing?")
    fine = [q for scope, q in t.questions() if scope != "generic"]
    assert len(fine) == 9 and "Does the image contain any weapons?" in fine


def test_prior_phrases_by_category_and_confidence():
    q = "What is happening in the image?"
    high = conditioned_prompt(ControlCode({"cyberbullying": 0.97, "sexual": 0.1}), q)
    assert "confident" in high and "gestures" in high and "nudity" not in high and high.endswith(q)
    mid = conditioned_prompt(ControlCode({"self_harm": 0.75}), q)
    assert "could contain self-harm" in mid and "cuts" in mid
    both = conditioned_prompt(ControlCode({"self_harm": 0.6, "sexual": 0.95}), q)
    assert both.index("sexually explicit") < both.index("self-harm")
    assert conditioned_prompt(ControlCode({"sexual": 0.1}), q) == q


def test_templates_file_is_editable(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        'generic = ["Q?"]\ninstruction = "Look. {question}"\n[confidence]\nany = { min = 0.5, text = "Check {attributes}." }\n'
        '[categories.sexual]\nattributes = ["a", "b"]\nkeywords = ["a"]\n'
    )
    t = load_templates(path)
    assert conditioned_prompt(ControlCode({"sexual": 0.9}), "Q?", templates=t) == "Check a, b. Look. Q?"
    path.write_text("generic = [")
    os.utime(path, ns=(1, 1))  # a different stamp even within the clock's resolution
    with pytest.raises(SafeViewError, match="cannot read prompt templates"):
        load_templates(path)


def test_keyword_scoring():
    assert attribute_match("A woman making an offensive gesture with her middle finger", "cyberbullying")
    assert not attribute_match("People posing for a photograph", "cyberbullying")
    assert not attribute_match("cuts and blood", "sexual")
    assert keyword_hits("hateful text and a weapon")["cyberbullying"] == 2


def test_evidence_backend_and_unknown_backend():
    image = np.zeros((30, 30, 3), np.uint8)
    mask = np.zeros((30, 30), bool)
    mask[:8, -8:] = True
    ev = {"cyberbullying": {"model": "m", "found": True, "verified": True, "depth": 1, "completed": 0, "fraction": 0.07,
                            "steps": [0.9, 0.2], "after": 0.2, "mask": mask},
          "_output": {"verified": True, "fallback": None, "perturbations": ["jpeg"], "models": ["m"]}}
    r = rationale(image, {"cyberbullying": 0.9, "sexual": 0.1}, ev)
    assert r.backend == "evidence" and "Obfuscating 1 region" in r.text and "top-right" in r.text and "gestures" in r.text
    assert "verified safe by every model" in r.text and "bit-identical" in r.text
    # an output that failed verification: no sentence may claim the regions hold the content
    failed = {"cyberbullying": {**ev["cyberbullying"], "verified": False},
              "_output": {"verified": False, "fallback": "full", "perturbations": ["jpeg"], "models": ["m"]}}
    text = rationale(image, {"cyberbullying": 0.9}, failed).text
    assert "failed verification" in text and "whole image is obfuscated" in text and "not verified" in text
    assert "lies in those regions" not in text and "bit-identical" not in text and "untouched" not in text
    assert set(BACKENDS) == {"evidence", "instructblip", "openai"}
    with pytest.raises(ValueError, match="unknown rationale backend"):
        rationale(image, {}, {}, backend="nope")
    with pytest.raises(ValueError, match="takes no option guidence"):
        rationale(image, {}, {}, backend="instructblip", vlm="x", guidence=0)


def test_make_records_and_rating_sheet(tmp_path):
    from PIL import Image

    (tmp_path / "imgs" / "self_harm").mkdir(parents=True)
    (tmp_path / "imgs" / "misc").mkdir()
    Image.new("RGB", (20, 20), (250, 0, 0)).save(tmp_path / "imgs" / "self_harm" / "a.png")
    Image.new("RGB", (20, 20), (0, 0, 250)).save(tmp_path / "imgs" / "misc" / "b.png")
    records = make_records(tmp_path / "imgs", classifiers=[FixedClassifier("self_harm", 0.9)])
    by_image = {}
    for r in records:
        by_image.setdefault(r["image"], []).append(r)
    assert len(by_image["self_harm/a.png"]) == 2 + 3 and len(by_image["misc/b.png"]) == 2 + 9
    assert all(r["answer"] == "" and r["control"] == {"self_harm": 0.9} for r in records)

    items = [{"image": np.full((20, 20, 3), 200, np.uint8), "name": "self_harm/a.png", "category": "self_harm", "control": {"self_harm": 0.9}}]
    rows = evaluate(items, [{"backend": "evidence"}])
    assert len(rows) == 11 and all(row["attribute_match"] == 1 for row in rows)  # the evidence text lists the attributes
    assert summarise(rows) == {("evidence", "", "coarse"): 1.0, ("evidence", "", "fine"): 1.0}
    csv_path, html_path = write_sheet(rows, items, tmp_path / "sheet")
    with open(csv_path) as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == 11 and read[0]["rater_correct"] == "" and json.loads(read[0]["keyword_hits"])["self_harm"] > 0
    page = html_path.read_text()
    assert "obfuscated" in page and page.count("<tr>") == 12 and "data:image/jpeg;base64," in page
