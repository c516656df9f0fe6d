"""The persisted work queue and the processes that drain it.

Jobs are rows of ``scans``: a worker claims one with a compare-and-set ``UPDATE … WHERE
status='queued'`` (atomic on SQLite and PostgreSQL alike), holds it under a lease, runs the
pipeline (paper, Fig. 1) on the verified original and stores the result and its views. A failing
job goes back to the queue until it has been tried ``max_attempts`` times, then it is marked
failed with its error. Jobs of a worker that died, or whose lease ran out, are released the same
way, so pending work survives crashes and restarts.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from datetime import timedelta

import numpy as np
from PIL import Image
from sqlalchemy import case, select, update
from sqlalchemy.orm import sessionmaker

from ..images import load_image_info
from ..obfuscate import Obfuscator
from ..report import _resize_labels, _thumb, heatmap_overlay, regions_overlay
from .config import ServiceConfig
from .db import Scan, make_engine, utcnow
from .storage import Storage

#: a worker that exits sooner than this after starting is restarted with a growing delay
QUICK_DEATH_S = 30.0


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def render_views(result, storage: Storage, scan_id: str) -> None:
    """Store what a reviewer sees without revealing anything: a blurred thumbnail, the obfuscated
    output (when something was flagged) and, per flagged category, heat map and chosen regions
    drawn over the blurred thumbnail."""
    art = result.artifacts
    small = _thumb(art.image)
    blurred = Obfuscator("blur")(small, np.ones(small.shape[:2], bool))
    storage.put_output(scan_id, "blurred.jpg", _encode(blurred, "JPEG"))
    if art.obfuscated is not None:
        storage.put_output(scan_id, "obfuscated.png", _encode(art.obfuscated, "PNG"))
    for index, cf in enumerate(result.counterfactuals):
        attribution = _resize_labels(art.attributions[cf.category], small.shape[:2], False)
        segments = _resize_labels(art.segments[cf.category].astype(np.int32), small.shape[:2], True)
        mask = _resize_labels(art.masks[cf.category].astype(np.uint8), small.shape[:2], True).astype(bool)
        storage.put_output(scan_id, f"heatmap-{index}.jpg", _encode(heatmap_overlay(blurred, attribution), "JPEG"))
        storage.put_output(scan_id, f"regions-{index}.jpg", _encode(regions_overlay(blurred, segments, mask), "JPEG"))


def release(sessions: sessionmaker, *conditions, max_attempts: int, reason: str) -> int:
    """Put running jobs matching ``conditions`` back in the queue, or mark them failed when they
    have used up their attempts; returns how many were released."""
    now = utcnow()
    with sessions() as session:
        result = session.execute(
            update(Scan)
            .where(Scan.status == "running", *conditions)
            .values(
                status=case((Scan.attempts >= max_attempts, "failed"), else_="queued"),
                error=reason,
                worker=None,
                lease_until=None,
                finished_at=case((Scan.attempts >= max_attempts, now), else_=None),
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return result.rowcount


class Worker:
    """One queue consumer: loads the models once, then claims and runs jobs."""

    def __init__(self, config: ServiceConfig, sessions: sessionmaker, *, worker_id: str | None = None) -> None:
        from ..classify import load_model_set
        from ..pipeline import Safeguard

        self.config = config
        self.sessions = sessions
        self.storage = Storage(config.storage)
        self.worker_id = worker_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        models = config.models() if callable(config.models) else load_model_set(config.models)
        self.guard = Safeguard(models, **config.safeguard)

    def claim(self) -> str | None:
        """Atomically take the oldest queued job (after releasing expired leases); None when idle."""
        release(self.sessions, Scan.lease_until < utcnow(), max_attempts=self.config.max_attempts, reason="lease expired (worker lost)")
        with self.sessions() as session:
            for _ in range(10):
                candidate = session.scalar(select(Scan.id).where(Scan.status == "queued").order_by(Scan.created_at, Scan.id).limit(1))
                if candidate is None:
                    return None
                now = utcnow()
                taken = session.execute(
                    update(Scan)
                    .where(Scan.id == candidate, Scan.status == "queued")
                    .values(
                        status="running", worker=self.worker_id, attempts=Scan.attempts + 1, started_at=now,
                        lease_until=now + timedelta(seconds=self.config.lease_s),
                    )
                    .execution_options(synchronize_session=False)
                )
                session.commit()
                if taken.rowcount == 1:
                    return candidate
        return None

    def run(self, scan_id: str) -> None:
        """Scan one claimed job and record its outcome (done, back to the queue, or failed)."""
        with self.sessions() as session:
            sha256 = session.get(Scan, scan_id).sha256
        try:
            data = self.storage.read_original(sha256)
            loaded = load_image_info(data, max_pixels=self.config.max_pixels, max_bytes=self.config.max_bytes)
            result = self.guard.scan(loaded)
            render_views(result, self.storage, scan_id)
        except Exception as exc:  # noqa: BLE001 - one job's failure is recorded, the worker goes on
            release(
                self.sessions, Scan.id == scan_id, Scan.worker == self.worker_id,
                max_attempts=self.config.max_attempts, reason=f"{type(exc).__name__}: {exc}"[:2000],
            )
            return
        flagged = [c.category for c in result.categories if c.unsafe]
        with self.sessions() as session:
            session.execute(
                update(Scan)
                .where(Scan.id == scan_id, Scan.worker == self.worker_id, Scan.status == "running")
                .values(
                    status="done", error=None, lease_until=None, finished_at=utcnow(), verdict=result.verdict,
                    flagged="," + ",".join(flagged) + "," if flagged else "",
                    max_unsafe=max((c.unsafe_probability for c in result.categories), default=0.0),
                    result_json=result.model_dump_json(),
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()

    def drain(self) -> int:
        """Run jobs until none is queued; returns how many were run."""
        count = 0
        while (job := self.claim()) is not None:
            self.run(job)
            count += 1
        return count

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.drain() == 0:
                stop.wait(self.config.poll_s)


def worker_main(config: ServiceConfig, worker_id: str) -> None:
    """Entry point of a worker process (SIGTERM stops it after the job in hand)."""
    from safeview.threads import set_threads

    set_threads(1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops its workers itself
    engine = make_engine(config.db_url)
    try:
        Worker(config, sessionmaker(engine, expire_on_commit=False), worker_id=worker_id).loop(stop)
    finally:
        engine.dispose()


class WorkerPool:
    """``n`` worker processes (spawned, so each loads the models once in a clean interpreter),
    supervised: a worker that dies has its job released and is replaced."""

    def __init__(self, config: ServiceConfig, sessions: sessionmaker, n: int, *, check_s: float = 1.0) -> None:
        if not isinstance(config.models, str):
            raise ValueError("worker processes need a --models spec string, not a callable")
        self.config, self.sessions, self.n, self.check_s = config, sessions, n, check_s
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self.started: dict[str, float] = {}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def _spawn(self) -> None:
        worker_id = f"w-{uuid.uuid4().hex[:12]}"
        process = self.context.Process(target=worker_main, args=(self.config, worker_id), name=f"safeview-{worker_id}", daemon=True)
        process.start()
        self.processes[worker_id] = process
        self.started[worker_id] = time.monotonic()

    def start(self) -> None:
        """Release every job left running by a previous server (one server per database), then start."""
        release(self.sessions, max_attempts=self.config.max_attempts, reason="server restarted while the job ran")
        for _ in range(self.n):
            self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="safeview-worker-monitor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        """Replace dead workers; one that dies within ``QUICK_DEATH_S`` of starting (a model that
        cannot load, say) is replaced after a delay that doubles each time, up to a minute."""
        backoff, respawn_at = 0.0, 0.0
        while not self._stop.wait(self.check_s):
            for worker_id, process in list(self.processes.items()):
                if not process.is_alive():
                    del self.processes[worker_id]
                    uptime = time.monotonic() - self.started.pop(worker_id)
                    release(
                        self.sessions, Scan.worker == worker_id, max_attempts=self.config.max_attempts,
                        reason=f"worker died (exit code {process.exitcode})",
                    )
                    backoff = min(60.0, max(1.0, 2 * backoff)) if uptime < QUICK_DEATH_S else 0.0
                    respawn_at = time.monotonic() + backoff
                    print(f"safeview: worker {worker_id} exited with code {process.exitcode} after {uptime:.0f} s; "
                          f"starting another in {backoff:.0f} s", file=sys.stderr, flush=True)
            while len(self.processes) < self.n and time.monotonic() >= respawn_at and not self._stop.is_set():
                self._spawn()

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values() if p.pid is not None]

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join()
        for process in self.processes.values():
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self.processes.clear()
        self.started.clear()
