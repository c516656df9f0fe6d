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

Loading it costs scikit-learn's import (1.2 s, in every process that reads text), so the
model is read out of its pickles once, into plain arrays (its vocabulary, inverse document
frequencies, and the five calibrated linear SVMs' weights and sigmoids), checked against
scikit-learn's own ``predict_prob`` on probe texts, and kept in SafeView's cache
(:func:`safeview.runtime.cache_dir`) under the digest of the package's two model files. Later
processes score with those arrays (:class:`LinearText`, the same TF-IDF and calibrated decision,
written out because the point is not to import the library) and import neither scikit-learn nor
the package. A model whose settings :class:`LinearText` does not reproduce is used through
scikit-learn, as before.

It judges offensive or profane language (insults such as "loser", "idiot", "you suck"), which is
what the paper's question "Is there any text in the image that might be considered hate speech?"
can be answered with here; it is not a hate-speech classifier, and the rationale words it so.

Text split by the OCR into several boxes ("LO" + "SER", two lines of one phrase) is judged also
joined: every run of boxes that follow each other in reading order on one line (with and without a
space), and all the text of the image in reading order. Reported are the smallest runs that
score as offensive, so a phrase is not claimed again by every longer run containing it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

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


#: the arrays' layout in the cache; a change makes every cached copy stale
LINEAR_TEXT_VERSION = "linear-text-1"
#: texts :func:`_converted` checks the arrays on against scikit-learn (the vocabulary's words are added)
PROBES = ("you suck", "LOSER", "Idiot!", "hello world", "Grüße aus Zürich", "", "!!! ??", "you are a loser, idiot",
          "nice day at the beach", "go away", "a b c", "x" * 300)


@dataclass(frozen=True)
class LinearText:
    """alt-profanity-check's model as arrays: scikit-learn's ``TfidfVectorizer`` (lower-cased
    tokens of ``token_pattern``, counts of the ``vocabulary`` words times ``idf``, L2-normalised)
    and ``CalibratedClassifierCV`` of linear SVMs with sigmoid calibration, binary: the
    probability of the profane class is the mean over the SVMs ``k`` of 1 / (1 + exp(a_k·d_k + b_k)),
    d_k = x·w_k + c_k."""

    vocabulary: tuple[str, ...]
    idf: np.ndarray
    weights: np.ndarray  # (K, V)
    intercepts: np.ndarray  # (K,)
    a: np.ndarray  # (K,)
    b: np.ndarray  # (K,)
    token_pattern: str

    @cached_property
    def _index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.vocabulary)}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        index, pattern = self._index, re.compile(self.token_pattern)
        x = np.zeros((len(texts), len(self.vocabulary)))
        for row, text in enumerate(texts):
            for token in pattern.findall(text.lower()):
                if (i := index.get(token)) is not None:
                    x[row, i] += 1.0
        x *= self.idf
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=x, where=norms > 0)
        decisions = x @ self.weights.T + self.intercepts
        return (1.0 / (1.0 + np.exp(self.a * decisions + self.b))).mean(axis=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vocabulary": np.array(self.vocabulary), "idf": self.idf, "weights": self.weights, "intercepts": self.intercepts,
                "a": self.a, "b": self.b, "token_pattern": np.array(self.token_pattern)}

    @classmethod
    def from_arrays(cls, arrays: Any) -> "LinearText":
        return cls(tuple(str(w) for w in arrays["vocabulary"]), *(np.asarray(arrays[k], np.float64) for k in ("idf", "weights", "intercepts", "a", "b")),
                   str(arrays["token_pattern"]))

    @classmethod
    def from_sklearn(cls, vectorizer: Any, model: Any) -> "LinearText | None":
        """The arrays of a fitted vectorizer and calibrated classifier, or ``None`` where their settings
        are not the ones this class computes (n-grams, accents, sublinear counts, other calibrations…)."""
        settings = vectorizer.get_params()
        expected = {"analyzer": "word", "binary": False, "lowercase": True, "ngram_range": (1, 1), "norm": "l2",
                    "preprocessor": None, "strip_accents": None, "sublinear_tf": False, "tokenizer": None, "use_idf": True}
        classifiers = getattr(model, "calibrated_classifiers_", [])
        if any(settings.get(k) != v for k, v in expected.items()) or not classifiers or list(model.classes_) != [0, 1]:
            return None
        if set(vectorizer.vocabulary_) & set(vectorizer.get_stop_words() or ()):
            return None  # a stop word in the vocabulary would have to be dropped by hand
        if any(c.method != "sigmoid" or len(c.calibrators) != 1 or c.estimator.coef_.shape[0] != 1 for c in classifiers):
            return None
        vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
        return cls(
            tuple(vocabulary), np.asarray(vectorizer.idf_, np.float64),
            np.stack([np.asarray(c.estimator.coef_[0], np.float64) for c in classifiers]),
            np.array([float(c.estimator.intercept_[0]) for c in classifiers]),
            np.array([float(c.calibrators[0].a_) for c in classifiers]), np.array([float(c.calibrators[0].b_) for c in classifiers]),
            vectorizer.token_pattern,
        )


def _package_folder() -> Path:
    """alt-profanity-check's folder, found without importing it (which unpickles its model)."""
    spec = importlib.util.find_spec("profanity_check")
    if spec is None or spec.origin is None:
        raise ImportError("profanity_check")
    return Path(spec.origin).parent


def _scorer(folder: Path) -> Callable[[Sequence[str]], np.ndarray]:
    """The model's ``texts -> probabilities of the profane class``: the cached :class:`LinearText`
    of the package's model files, or one converted from them now (importing scikit-learn once) and
    kept when it gives scikit-learn's probabilities on :data:`PROBES` and vocabulary words, or
    scikit-learn's own ``predict_prob`` where it cannot be converted."""
    from ..runtime import cache_dir, store

    digest = hashlib.blake2b(LINEAR_TEXT_VERSION.encode(), digest_size=20)
    for name in ("vectorizer.joblib", "model.joblib"):
        digest.update(hashlib.blake2b((folder / "data" / name).read_bytes()).digest())
    directory = cache_dir()
    cached = directory / f"profanity-{digest.hexdigest()}.npz" if directory else None
    if cached is not None and cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as arrays:
                return LinearText.from_arrays(arrays)
        except Exception:  # noqa: BLE001 - a damaged file is converted again
            pass
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings():  # the package unpickles its model when imported
        warnings.simplefilter("error", InconsistentVersionWarning)
        package = importlib.import_module("profanity_check")
    inner = importlib.import_module("profanity_check.profanity_check")
    converted = LinearText.from_sklearn(inner.vectorizer, inner.model)
    probes = [*PROBES, " ".join(converted.vocabulary[::97]) if converted else "", *(converted.vocabulary[::501] if converted else ())]
    if converted is None or not np.allclose(converted(probes), package.predict_prob(probes), rtol=0, atol=1e-9):
        return package.predict_prob
    if cached is not None:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **converted.arrays())
        store(cached, buffer.getvalue())
    return converted


class OffensiveText(Detector):
    name = "offensive"
    package = "alt-profanity-check"
    module = "profanity_check"
    sees = ("offensive_text",)
    needs = ("ocr",)
    shared = True  # a linear model on arrays it only reads

    def import_module(self) -> Any:
        return _package_folder()

    def build(self, module: Any) -> Any:
        return _scorer(module)

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
