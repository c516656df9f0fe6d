"""Offensive wording in the text the OCR read, judged by ``alt-profanity-check`` (MIT), trained by
its authors on 200k human-labelled samples of clean and profane text and shipped as two joblib
files inside its wheel: a TF-IDF of words (15,442 in its vocabulary) and a linear SVM calibrated
to probabilities.

Why this model and not one of our own: it is a real classifier trained on labelled human text,
where a word list we wrote would only find the words we thought of. Its cost is that it pins
``scikit-learn`` and ``joblib`` exactly (its pickles load only with the version that wrote them);
release 1.9.1 pins scikit-learn 1.9.1, the version SafeView is installed with, so it works. A
mismatch (scikit-learn's ``InconsistentVersionWarning`` on loading) makes this detector *fail*,
visibly, rather than score with a model that may be read wrongly.

It judges offensive or profane language (insults such as "loser", "idiot", "you suck"), which is
what the paper's question "Is there any text in the image that might be considered hate speech?"
can be answered with here; it is not a hate-speech classifier, and the rationale words it so.

Text split by the OCR into several boxes ("LO" + "SER", two lines of one phrase) is judged also
joined: every run of boxes that follow each other in reading order on one line (with and without a
space), and all the text of the image in reading order. Reported are the smallest runs that
score as offensive, so a phrase is not claimed again by every longer run containing it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .base import Attribute
from .detector import Detector

#: the probability at and above which text counts as offensive (alt-profanity-check's own cut)
THRESHOLD = 0.5


def _reading_order(texts: list[Attribute]) -> list[list[int]]:
    """Indices of ``texts`` grouped into lines (boxes whose vertical centres lie within half the
    taller box's height), top to bottom, each line left to right."""
    order = sorted(range(len(texts)), key=lambda i: (texts[i].box[1] + texts[i].box[3]) / 2)
    lines: list[list[int]] = []
    for i in order:
        x0, y0, x1, y1 = texts[i].box
        for line in lines:
            j = line[-1]
            jy0, jy1 = texts[j].box[1], texts[j].box[3]
            if abs((y0 + y1) - (jy0 + jy1)) / 2 <= max(y1 - y0, jy1 - jy0) / 2:
                line.append(i)
                break
        else:
            lines.append([i])
    return [sorted(line, key=lambda i: texts[i].box[0]) for line in lines]


def _candidates(texts: list[Attribute]) -> list[tuple[int, ...]]:
    """The runs of boxes to judge: each box, each run of consecutive boxes on one line, and the
    whole text in reading order; smallest first."""
    lines = _reading_order(texts)
    runs = {(i,) for i in range(len(texts))}
    for line in lines:
        runs |= {tuple(line[a:b]) for a in range(len(line)) for b in range(a + 2, len(line) + 1)}
    runs.add(tuple(i for line in lines for i in line))
    return sorted(runs, key=lambda r: (len(r), r))


def _texts(found: list[Attribute]) -> list[Attribute]:
    """The text boxes the OCR read something in."""
    return [a for a in found if a.name == "text" and a.text and a.text.strip()]


class OffensiveText(Detector):
    name = "offensive"
    package = "alt-profanity-check"
    module = "profanity_check"
    sees = ("offensive_text",)
    needs = ("ocr",)

    def import_module(self) -> Any:
        from sklearn.exceptions import InconsistentVersionWarning

        with warnings.catch_warnings():  # the module unpickles its model when imported
            warnings.simplefilter("error", InconsistentVersionWarning)
            return super().import_module()

    def build(self, module: Any) -> Any:
        return module.predict_prob

    def has_input(self, found: list[Attribute]) -> bool:
        return bool(_texts(found))

    def find(self, model: Any, image: np.ndarray, found: list[Attribute]) -> list[Attribute]:
        texts = _texts(found)
        if not texts:
            return []
        runs = _candidates(texts)
        strings: list[str] = []
        for run in runs:
            parts = [texts[i].text.strip() for i in run]  # type: ignore[union-attr]
            strings += [" ".join(parts), "".join(parts)]
        scores = np.asarray(model(strings), float).reshape(len(runs), 2)
        version = self.version()
        out: list[Attribute] = []
        taken: list[set[int]] = []
        for k, run in enumerate(runs):
            best = int(scores[k].argmax())
            if scores[k, best] < THRESHOLD or any(t <= set(run) for t in taken):
                continue
            taken.append(set(run))
            boxes = np.array([texts[i].box for i in run])
            box = (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max()))
            out.append(Attribute("offensive_text", float(scores[k, best]), self.name, version, box=box, text=strings[2 * k + best]))
        return out
