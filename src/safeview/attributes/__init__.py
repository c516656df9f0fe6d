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
detector on an obfuscated output, and on the re-upload copies of it that verification also checks
(:data:`SECOND_OPINION_COPIES`), and fails it when an unsafe attribute (offensive text still
readable) is found on any of them.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Sequence

import cv2
import numpy as np

from .base import UNSAFE_ATTRIBUTES, Attribute, AttributeReport, DetectorRun, NotInstalled, SecondOpinion, Verdict, overlap
from .detector import WORKER, Detector
from ..schema import AttributeModel, AttributeReportModel, DetectorRunModel, SecondOpinionModel, VerdictModel
from .ocr import OCR
from .offensive import OffensiveText

#: name -> adapter, in the order they run (a detector after those it needs)
DETECTORS: dict[str, Detector] = {d.name: d for d in (OCR(), OffensiveText())}
DEFAULT_DETECTORS: tuple[str, ...] = tuple(DETECTORS)

#: The re-upload copies (:data:`safeview.verify.PERTURBATIONS`) the second opinion checks besides
#: the output, where verification checks them: every copy but the mirror.
#:
#: Why these, measured: near its size limit the OCR reads a word on some copies and not on others,
#: and not mainly on the enlarged crops. Of 54 scenes (LOSER or IDIOT, 6–18 px tall, drawn on
#: scikit-image's astronaut at 224², 1024², 2000² and 3200²; the output and its copies each read
#: once), 4 had the word read by a copy but not by the output: 3 by the JPEG copy (the most common
#: re-upload of all), 1 by both the rescaled copy and an enlarged crop (at 2000² and up the crops of
#: the upscaled photo read less than the output). On scikit-image's coffee at 1024² (the tests'
#: scene), in 7 of 16 placements (8–11 px, near each corner) the enlarged crop over the word read
#: it and the output did not. So the JPEG and rescaled copies stay in with the crops. The mirrored
#: copy, checked in 42 of the 54 scenes, never read the word (the recogniser reads left to right;
#: a mirrored word is not read as that word), so it is left out.
#:
#: The cost: each copy is one more pass of every detector at the output's size, about as long as
#: the pass on the output, so these six copies make the second opinion about 7× the cost of
#: checking the output alone (one thread, OCR and offensive detector: 0.26 → 1.8 s at 224²,
#: 0.58 → 3.9 s at 1024², 3.6 → 23 s at 2000², where RapidOCR works at 2000 px a side). It runs
#: only on flagged images whose output the classifiers passed, and once more when the mask was
#: grown over what it found.
SECOND_OPINION_COPIES: tuple[str, ...] = ("jpeg", "rescale", "crop0", "crop1", "crop2", "crop3")


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
        inputs = [a for a in found if a.detector in det.needs]
        try:
            if det.has_input(inputs):
                new = det.find(det.load(), image, inputs)
            else:  # nothing to judge: it finds nothing, and its model is not loaded for that
                det.installed()
                new = []
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


_SLOTS = itertools.count()
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (process id, workers) -> pool
_POOLS_LOCK = threading.Lock()


def _enter_worker(threads: int) -> None:
    WORKER.slot, WORKER.threads = next(_SLOTS), threads


def _pool(workers: int) -> ThreadPoolExecutor:
    """This process's pool of ``workers`` detector threads, each with one thread of its own models
    (kept for the process's life, so each thread loads its models once; a forked child makes its own)."""
    key = (os.getpid(), workers)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="safeview-detect", initializer=_enter_worker, initargs=(1,))
        return _POOLS[key]


def detect_many(images: Sequence[np.ndarray], detectors: Sequence[str] = DEFAULT_DETECTORS) -> list[AttributeReport]:
    """:func:`detect` on each of ``images``, the same reports in the same order. Where this process
    may use more than one thread (:func:`~safeview.threads.thread_limit`), the images run side by
    side, one per thread, each thread with single-threaded models of its own: RapidOCR's passes use
    a second core poorly (seven passes at 224² on two cores: 1.58 s one at a time with two threads,
    1.11 s two at a time with one thread each; bench/README.md, issue 18)."""
    if len(images) < 2:  # a lone pass keeps the caller's thread and its models' threads
        return [detect(image, detectors) for image in images]
    return [queued.result() for queued in [detect_soon(image, detectors) for image in images]]


def detect_soon(image: np.ndarray, detectors: Sequence[str] = DEFAULT_DETECTORS) -> "Future[AttributeReport]":
    """:func:`detect` on ``image``, queued on this process's detector threads when it may use more
    than one (the caller goes on meanwhile, and passes queued later run after it), else run now."""
    from ..threads import thread_limit

    if thread_limit() < 2 or getattr(WORKER, "slot", None) is not None:  # one thread, or already a detector thread
        done: Future[AttributeReport] = Future()
        try:
            done.set_result(detect(image, detectors))
        except Exception as exc:  # noqa: BLE001 - raised by result(), as from a queued pass
            done.set_exception(exc)
        return done
    return _pool(thread_limit()).submit(detect, image, detectors)


def _onto(attribute: Attribute, copy: str, shape: tuple[int, int]) -> Attribute:
    """``attribute``, found on the re-upload ``copy`` of an image of ``shape``, where it lies on
    that image (a crop's box shrinks back into its corner, a mirrored one flips back)."""
    from ..verify import source_window

    (x0, y0, x1, y1), mirrored = source_window(copy, shape)
    h, w = shape
    box = mask = None
    if attribute.box is not None:
        bx0, by0, bx1, by1 = attribute.box
        if mirrored:
            bx0, bx1 = w - bx1, w - bx0
        sx, sy = (x1 - x0) / w, (y1 - y0) / h
        box = (
            x0 + int(np.floor(bx0 * sx)), y0 + int(np.floor(by0 * sy)),
            min(x1, x0 + int(np.ceil(bx1 * sx))), min(y1, y0 + int(np.ceil(by1 * sy))),
        )
    if attribute.mask is not None:
        seen = np.asarray(attribute.mask, np.uint8)[:, ::-1] if mirrored else np.asarray(attribute.mask, np.uint8)
        mask = np.zeros(shape, bool)
        mask[y0:y1, x0:x1] = cv2.resize(np.ascontiguousarray(seen), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST) > 0
    return replace(attribute, box=box, mask=mask, seen_on=copy)


def second_opinion(
    output: np.ndarray, detectors: Sequence[str] = DEFAULT_DETECTORS, copies: Sequence[str] = ()
) -> SecondOpinion:
    """Run every installed detector in ``detectors`` on ``output`` (the obfuscated image) and on
    its re-upload ``copies`` (:data:`safeview.verify.PERTURBATIONS` names; the pipeline passes
    :data:`SECOND_OPINION_COPIES`), and give each one's verdict: any unsafe attribute it finds on
    any of them (offensive text the OCR can still read, on the output or on a JPEG or enlarged-crop
    copy of it) fails the output. What a copy shows is mapped back onto the output (``seen_on``
    names where it was seen), so a caller can hide it there. Each copy costs one more pass of
    every detector, about as long as the pass on the output; the passes run side by side
    (:func:`detect_many`)."""
    from ..verify import PERTURBATIONS, check_perturbations

    names = check_perturbations(copies)
    report, *seen = detect_many([output, *(PERTURBATIONS[name](output) for name in names)], detectors)
    copy_reports = {
        name: AttributeReport(report.shape, tuple(_onto(a, name, report.shape) for a in on_copy.attributes), on_copy.runs)
        for name, on_copy in zip(names, seen)
    }
    where = {"output": report, **copy_reports}
    verdicts = []
    for run in report.runs:
        bad = tuple(a for r in where.values() for a in r.unsafe if a.detector == run.name)
        missed = {label: r.run(run.name) for label, r in where.items() if not r.run(run.name).checked}
        if bad or not missed:
            verdicts.append(Verdict(run.name, "failed" if bad else "passed", bad))
            continue
        first = next(iter(missed.values()))
        detail = f"{first.status}: {first.detail}"
        if len(missed) < len(where):
            detail = f"did not run on {', '.join(missed)} ({detail})"
        verdicts.append(Verdict(run.name, "not checked", (), detail))
    return SecondOpinion(report, tuple(verdicts), copy_reports)


def add_findings(report: AttributeReport, opinion: SecondOpinion) -> AttributeReport:
    """``report`` (the detectors on an image) with what ``opinion``, the second opinion on an
    obfuscated output of that image, found and ``report`` lacks: each unsafe attribute (with the
    ``seen_on`` copy it was read on) and the benign ones within it (the text it was read from). A
    word the OCR reads only on an enlarged crop or a JPEG copy is still in the image, so the
    rationale and the result name it; one overlapping an attribute of the same name for half its
    area or more is already there and is not added again."""
    shape = report.shape
    attributes = list(report.attributes)
    for seen in (opinion.report, *opinion.copy_reports.values()):
        for a in seen.unsafe:
            area = a.area(shape)
            if any(b.name == a.name and overlap(area, b.area(shape)) >= 0.5 for b in attributes):
                continue
            attributes += [t for t in seen.attributes if not t.unsafe and overlap(t.area(shape), area) >= 0.9] + [a]
    return replace(report, attributes=tuple(attributes))


__all__ = [
    "Attribute", "AttributeModel", "AttributeReport", "AttributeReportModel", "DEFAULT_DETECTORS", "DETECTORS",
    "Detector", "DetectorRun", "DetectorRunModel", "NotInstalled", "SECOND_OPINION_COPIES", "SecondOpinion",
    "SecondOpinionModel", "UNSAFE_ATTRIBUTES", "Verdict", "VerdictModel", "add_findings", "detect", "detect_many", "detect_soon", "overlap",
    "second_opinion",
]
