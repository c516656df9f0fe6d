"""``detect_many``: the same reports as ``detect`` one image at a time, in order, with the passes run
side by side on threads that each have their own model of a detector that must not serve two
threads at once, and one model shared where the detector allows it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import safeview.threads
from safeview.attributes import DETECTORS, Attribute, detect, detect_many, detect_soon
from safeview.attributes.detector import Detector, detector_threads


class Recording(Detector):
    """Reports the image's mean as a score; each model records the thread that built it, the
    threads it was built for and whether two threads ever used it at once."""

    name, package, module, sees = "recording", "numpy", "numpy", ("text",)
    builds: list[dict] = []

    def build(self, module):
        model = {"thread": threading.get_ident(), "threads": detector_threads(), "busy": threading.Lock(), "overlapped": False, "calls": 0}
        self.builds.append(model)
        return model

    def find(self, model, image, found):
        if not model["busy"].acquire(blocking=False):
            model["overlapped"] = True
            model["busy"].acquire()
        try:
            model["calls"] += 1
            time.sleep(0.01)  # long enough for another thread to try the same model
            return [Attribute("text", float(image.mean()) / 255, self.name, "v", box=(0, 0, 1, 1), text=str(int(image[0, 0, 0])))]
        finally:
            model["busy"].release()


class Shared(Recording):
    name, shared, builds = "recording-shared", True, []

    def find(self, model, image, found):
        model["calls"] += 1
        return []


@pytest.fixture
def recording(monkeypatch):
    Recording.builds.clear()
    Shared.builds.clear()
    monkeypatch.setitem(DETECTORS, "recording", Recording())
    monkeypatch.setitem(DETECTORS, "recording-shared", Shared())
    return ["recording", "recording-shared"]


def images(n: int) -> list[np.ndarray]:
    return [np.full((8, 8, 3), 10 * i, np.uint8) for i in range(n)]


def test_side_by_side_gives_detects_reports_in_order_with_a_model_per_thread(monkeypatch, recording):
    monkeypatch.setattr(safeview.threads, "_LIMIT", 2)
    batch = images(7)
    reports = detect_many(batch, recording)
    assert [r.attributes[0].text for r in reports] == [str(10 * i) for i in range(7)]
    one_by_one = [detect(image, recording) for image in batch]
    assert [r.attributes for r in reports] == [r.attributes for r in one_by_one]
    assert all(r.run("recording").status == "ran" and r.run("recording-shared").status == "ran" for r in reports)
    workers = [b for b in Recording.builds if b["thread"] != threading.get_ident()]
    assert len(workers) == 2 and {b["threads"] for b in workers} == {1}  # two threads, one core each
    assert sum(b["calls"] for b in workers) == 7 and not any(b["overlapped"] for b in Recording.builds)
    assert len(Shared.builds) == 1 and Shared.builds[0]["calls"] == 14  # one model served both threads and the caller
    # a second call reuses the worker threads' models
    detect_many(batch, recording)
    assert len(Recording.builds) == 3 and not any(b["overlapped"] for b in Recording.builds)


def test_one_thread_runs_them_in_turn_on_the_callers_model(monkeypatch, recording):
    monkeypatch.setattr(safeview.threads, "_LIMIT", 1)
    reports = detect_many(images(3), recording)
    assert [r.attributes[0].text for r in reports] == ["0", "10", "20"]
    assert {b["thread"] for b in Recording.builds} == {threading.get_ident()}
    assert detect_many([], recording) == []


@pytest.mark.parametrize("limit", [1, 2])
def test_detect_soon_is_detect_on_a_future(monkeypatch, recording, limit):
    """Queued on a detector thread (two threads) or run at once (one), a pass gives detect's report,
    and a bad image's error comes out of the future, not lost on a thread."""
    monkeypatch.setattr(safeview.threads, "_LIMIT", limit)
    (image,) = images(1)
    queued = detect_soon(image + 30, recording)
    assert queued.result().attributes == detect(image + 30, recording).attributes
    assert {b["thread"] != threading.get_ident() for b in Recording.builds} == ({True, False} if limit == 2 else {False})
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        detect_soon(np.zeros((8, 8), np.uint8), recording).result()


def test_a_bad_image_among_them_is_an_error_not_a_missing_report(monkeypatch, recording):
    monkeypatch.setattr(safeview.threads, "_LIMIT", 2)
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        detect_many([*images(2), np.zeros((8, 8), np.uint8)], recording)
