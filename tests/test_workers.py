"""Worker processes hand results back in job order, never run more threads than cores, and are
used only where a scan is large enough to pay for loading the models again."""

from __future__ import annotations

import os
import time

from safeview import workers


def _slow_square(x: int, delay: float) -> tuple[int, int, int]:
    """A job that ends after ``delay`` seconds: its square, its process and that process's torch threads."""
    import torch

    time.sleep(delay)
    return x * x, os.getpid(), torch.get_num_threads()


def test_results_come_back_in_job_order_although_later_jobs_finish_first():
    jobs = [(i, 0.6 if i == 0 else 0.0) for i in range(9)]
    results = list(workers.in_workers(_slow_square, jobs, 2))
    assert [r[0] for r in results] == [i * i for i in range(9)]
    assert len({r[1] for r in results}) <= 2 and os.getpid() not in {r[1] for r in results}
    assert {r[2] for r in results} == {max(1, (os.cpu_count() or 1) // 2)}  # threads x workers <= cores


def test_small_scans_stay_in_this_process_and_workers_fit_in_memory(monkeypatch):
    free = workers.available_memory()
    assert free is None or free > 0
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(workers, "available_memory", lambda: 64 * workers.WORKER_BYTES)
    assert workers.auto_workers(1) == 1
    assert workers.auto_workers(workers.IMAGES_PER_WORKER * 2 - 1) == 1
    assert workers.auto_workers(workers.IMAGES_PER_WORKER * 2) == 2
    assert workers.auto_workers(10_000) == 4
    monkeypatch.setattr(workers, "available_memory", lambda: 3 * workers.WORKER_BYTES - 1)
    assert workers.auto_workers(10_000) == 2  # free memory for two model copies, not four
    assert workers.fitting_workers() == 2
    monkeypatch.setattr(workers, "available_memory", lambda: None)  # a system that does not say
    assert workers.auto_workers(10_000) == 4 and workers.fitting_workers() == 4
