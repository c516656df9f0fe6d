"""Scanning in worker processes on this machine, for ``safeview scan`` and ``safeview batch``:
each process loads the models once and uses ``cores // workers`` threads, so threads never
outnumber cores.

One process with two threads leaves a core idle while Python runs (decoding, OCR's pre- and
post-processing, writing). On the 500-image benchmark on two cores, ``safeview scan`` ran 28.0
images/s with two workers of one thread against 24.7 with one process of two threads (medians of
three alternating runs, bench/README.md), for twice the memory.
Written on :mod:`concurrent.futures` because the scan must hand results back in input order with a
bounded number of jobs in flight, which ``ProcessPoolExecutor.map`` does not bound.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Iterable, Iterator

#: images per worker below which extra processes cost more than they save (each loads the models)
IMAGES_PER_WORKER = 48
#: memory one worker may need: the default models' scan peaks at 1.2 GB per process (bench/README.md)
WORKER_BYTES = 1536 * 2**20
_GUARDS: dict[str, Any] = {}


def available_memory() -> int | None:
    """Bytes of physical memory free now, where the system says (Linux); None elsewhere."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fitting_workers() -> int:
    """One worker per core, but no more than free memory holds (:data:`WORKER_BYTES` each): a
    many-core machine would otherwise start more model copies than fit."""
    memory = available_memory()
    cores = os.cpu_count() or 1
    return max(1, min(cores, memory // WORKER_BYTES if memory is not None else cores))


def auto_workers(images: int) -> int:
    """Worker processes for a scan of ``images`` images: :func:`fitting_workers`, but no more than
    one per :data:`IMAGES_PER_WORKER` images (1: scan in this process)."""
    return max(1, min(fitting_workers(), images // IMAGES_PER_WORKER))


def worker_guard(models: Any, config: Any) -> Any:
    """This process's ``Safeguard`` for ``models`` and ``config``, built on first use."""
    from .pipeline import Safeguard

    key = repr((models, config))
    if key not in _GUARDS:
        _GUARDS.clear()
        _GUARDS[key] = Safeguard(models, config)
    return _GUARDS[key]


def _start(threads: int) -> None:
    from .threads import set_threads

    set_threads(threads)


def in_workers(task: Callable[..., Any], jobs: Iterable[tuple], workers: int) -> Iterator[Any]:
    """``task(*job)`` for every job, in ``workers`` spawned processes of ``cores // workers``
    threads each, yielded in job order. Two jobs per worker are kept running: a finished job waits
    for those before it without holding a worker back (at most eight jobs per worker are held). ``task`` must be a module-level function (it
    is pickled). Pending jobs are cancelled when the caller stops early."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(threads,))
    submitted: deque = deque()
    queue = iter(jobs)
    try:
        while True:
            running = [f for f in submitted if not f.done()]
            for job in queue:
                submitted.append(future := pool.submit(task, *job))
                running.append(future)
                if len(running) >= 2 * workers or len(submitted) >= 8 * workers:  # results held back: bounded too
                    break
            if not submitted:
                return
            if not submitted[0].done():
                wait(running, return_when=FIRST_COMPLETED)
                continue
            yield submitted.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def scan_group(config: Any, paths: list[str], protect: list | None) -> list[Any]:
    """Worker-process entry point of ``safeview scan``: one group of images through this process's
    ``Safeguard`` (``Safeguard.scan_iter``), each outcome a ``ScanResult`` or, for a failure, its
    error record (:func:`safeview.errors.error_record`; an exception's arguments may not pickle)."""
    from .errors import error_record

    outcomes = worker_guard(None, config).scan_iter(paths, protect=protect)
    return [error_record(path, o) if isinstance(o, BaseException) else o for path, o in zip(paths, outcomes)]
