"""Attributes from real detectors that ship offline (issue 17): what is actually in the image, to
ground the rationale in "unsafe image-specific attributes" as the paper claims ConditionalVLM does
(hateful text, rude gestures, body parts), and to give verification a second opinion besides the
classifier that chose the regions.

One small adapter per detector, each loaded on first use from a package that carries its weights
(``pip install 'safeview[attributes]'``; licences in the README):

``ocr`` (:mod:`.ocr`)
    RapidOCR with PaddleOCR's PP-OCRv6 models: ``text`` attributes (string, confidence, box).
``offensive`` (:mod:`.offensive`)
    alt-profanity-check on the text the OCR read: ``offensive_text`` attributes (unsafe).

A detector whose package is not installed reports ``not installed``, one that needs another that did
not run ``skipped``, one that raised ``failed``; their attributes are *not checked*, never absent.
Body parts are not detected: the one packaged detector (NudeNet) is AGPL-3.0 and stays out.

:func:`detect` finds the attributes of an image; :func:`second_opinion` runs every installed
detector on an obfuscated output and fails it when an unsafe attribute (offensive text still
readable) is found.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .base import UNSAFE_ATTRIBUTES, Attribute, AttributeReport, DetectorRun, NotInstalled, SecondOpinion, Verdict, overlap
from .detector import Detector
from ..schema import AttributeModel, AttributeReportModel, DetectorRunModel, SecondOpinionModel, VerdictModel
from .ocr import OCR
from .offensive import OffensiveText

#: name -> adapter, in the order they run (a detector after those it needs)
DETECTORS: dict[str, Detector] = {d.name: d for d in (OCR(), OffensiveText())}
DEFAULT_DETECTORS: tuple[str, ...] = tuple(DETECTORS)


def _plan(names: Sequence[str]) -> list[Detector]:
    """The detectors to run for ``names``: those named and those they need, in registry order."""
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown attribute detector(s) {unknown}; available: {', '.join(DETECTORS)}")
    wanted = set(names)
    for name in reversed(list(DETECTORS)):
        if name in wanted:
            wanted |= set(DETECTORS[name].needs)
    return [d for name, d in DETECTORS.items() if name in wanted]


def detect(image: np.ndarray, detectors: Sequence[str] = DEFAULT_DETECTORS) -> AttributeReport:
    """Run ``detectors`` (names from :data:`DETECTORS`, plus those they need) on ``image``
    (H×W×3 uint8 RGB) and report what each found and did."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"detect needs an H×W×3 uint8 RGB image, got {image.shape} {image.dtype}")
    found: list[Attribute] = []
    runs: dict[str, DetectorRun] = {}
    for det in _plan(detectors):

        def record(status, seconds=0.0, version=None, detail=None, det=det):
            runs[det.name] = DetectorRun(det.name, det.package, status, det.sees, version, seconds, detail)

        missing = [n for n in det.needs if not runs[n].checked]
        if missing:
            record("skipped", detail=f"needs the {', '.join(missing)} detector, which did not run")
            continue
        t = time.perf_counter()
        try:
            model = det.load()
            new = det.find(model, image, [a for a in found if a.detector in det.needs])
            version = det.version()
        except NotInstalled as exc:
            record("not installed", detail=str(exc))
            continue
        except Exception as exc:  # a broken detector is reported as failed, never as "found nothing"
            record("failed", time.perf_counter() - t, detail=f"{type(exc).__name__}: {exc}")
            continue
        found += new
        record("ran", time.perf_counter() - t, version)
    return AttributeReport(tuple(image.shape[:2]), tuple(found), tuple(runs.values()))


def second_opinion(output: np.ndarray, detectors: Sequence[str] = DEFAULT_DETECTORS) -> SecondOpinion:
    """Run every installed detector in ``detectors`` on ``output`` (the obfuscated image) and give
    each one's verdict: any unsafe attribute it still finds (offensive text the OCR can still read)
    fails the output."""
    report = detect(output, detectors)
    verdicts = []
    for run in report.runs:
        if not run.checked:
            verdicts.append(Verdict(run.name, "not checked", (), f"{run.status}: {run.detail}"))
            continue
        bad = tuple(a for a in report.unsafe if a.detector == run.name)
        verdicts.append(Verdict(run.name, "failed" if bad else "passed", bad))
    return SecondOpinion(report, tuple(verdicts))


__all__ = [
    "Attribute", "AttributeModel", "AttributeReport", "AttributeReportModel", "DEFAULT_DETECTORS", "DETECTORS",
    "Detector", "DetectorRun", "DetectorRunModel", "NotInstalled", "SecondOpinion", "SecondOpinionModel",
    "UNSAFE_ATTRIBUTES", "Verdict", "VerdictModel", "detect", "overlap", "second_opinion",
]
