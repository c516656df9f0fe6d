"""The persisted work queue and the processes that drain it.

Jobs are rows of ``scans``: a worker claims one with a compare-and-set ``UPDATE … WHERE
status='queued'`` (atomic on SQLite and PostgreSQL alike), holds it under a lease, runs the
pipeline (paper, Fig. 1) on the verified original — with the scan's protected regions, the
submitter's and any a reviewer added — and stores the result and its views. A failing
job goes back to the queue until it has been tried ``max_attempts`` times, then it is marked
failed with its error. Jobs of a worker that died, or whose lease ran out, are released the same
way, so pending work survives crashes and restarts. A worker renews the lease of the job in hand
(a heartbeat every third of the lease), so a long job is never taken over by a second worker.

Every job is bounded: a job running past ``job_timeout_s`` is interrupted and marked failed at
once (no retry: it would tie up a worker again) with the reason; so is one that runs out of the
worker's address-space limit (``job_memory_mb`` above what the loaded models take, set with
``setrlimit`` in the worker process). The worker process goes on with the next job.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import case, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from ..errors import ImageError
from ..images import load_image_info
from ..outputs import write_scan
from ..protect import ProtectError
from .config import ServiceConfig
from .db import Scan, make_engine, utcnow
from .protection import job_regions
from .storage import Storage

#: glibc settings of worker processes, so the address-space limit measures what a job holds: large
#: blocks always mmap'd (returned to the system when freed, also after a job that ran out of
#: memory) and few per-thread arenas (each reserves 64 MiB of address space)
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(8 << 20), "MALLOC_ARENA_MAX": "2"}

#: a worker that exits sooner than this after starting is restarted with a growing delay
QUICK_DEATH_S = 30.0


class JobLimitExceeded(BaseException):
    """Raised inside a job that ran past its time limit. A ``BaseException``, like
    ``KeyboardInterrupt``, so that no ``except Exception`` in the pipeline swallows it."""


@contextmanager
def time_limit(seconds: float):
    """Interrupt the enclosed code with :class:`JobLimitExceeded` after ``seconds`` (SIGALRM).
    Signals reach only the main thread, so elsewhere (a worker run in a test's thread) the
    block runs unbounded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum, _frame):
        raise JobLimitExceeded(f"time limit of {seconds:g} s exceeded; the image is too expensive to scan")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def limit_memory(extra_mb: int) -> None:
    """Cap this process's address space at what it uses now plus ``extra_mb`` MiB (0: no cap), so
    a job that needs more gets a MemoryError instead of pushing the machine into swap."""
    if extra_mb:
        with open("/proc/self/statm") as fh:
            in_use = int(fh.read().split()[0]) * resource.getpagesize()
        cap = in_use + extra_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


class ViewStore:
    """The service's :class:`~safeview.outputs.Store`: files a scan's outputs by kind (the full
    size ``obfuscated.png``, the reviewer's ``blurred.jpg``, ``heatmap-N.jpg``, ``regions-N.jpg``)
    in its storage, and records each as the API route that serves it."""

    def __init__(self, storage: Storage, scan_id: str) -> None:
        self.storage, self.scan_id = storage, scan_id

    @staticmethod
    def view(kind: str) -> str:
        return kind.removeprefix("view.")

    def locate(self, kind: str, name: str) -> str:
        return f"/v1/scans/{self.scan_id}/views/{self.view(kind)}"

    def put(self, kind: str, name: str, data: bytes) -> None:
        if kind == "obfuscated":
            self.storage.put_output(self.scan_id, "obfuscated.png", data)
        elif kind != "view.obfuscated":  # the full-size PNG above is the obfuscated view
            self.storage.put_output(self.scan_id, f"{self.view(kind)}.jpg", data)


def release(sessions: sessionmaker, *conditions, max_attempts: int, reason: str, hand_back: bool = False) -> int:
    """Put running jobs matching ``conditions`` back in the queue, or mark them failed when they
    have used up their attempts (``max_attempts=0``: fail them now); returns how many were
    released. ``hand_back`` (a graceful stop interrupted the job) gives the attempt back."""
    now = utcnow()
    spent = Scan.attempts >= max_attempts
    with sessions() as session:
        result = session.execute(
            update(Scan)
            .where(Scan.status == "running", *conditions)
            .values(
                status="queued" if hand_back else case((spent, "failed"), else_="queued"),
                attempts=Scan.attempts - 1 if hand_back else Scan.attempts,
                error=reason,
                worker=None,
                lease_until=None,
                finished_at=None if hand_back else case((spent, now), else_=None),
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return result.rowcount


class Worker:
    """One queue consumer: loads the models once, then claims and runs jobs. ``guard`` scans with
    the service's settings; a job whose ``protect_faces`` differs from them gets a second
    :class:`~safeview.pipeline.Safeguard` on the same models (built once, on first need)."""

    def __init__(self, config: ServiceConfig, sessions: sessionmaker, *, worker_id: str | None = None) -> None:
        from ..classify import load_model_set
        from ..pipeline import Safeguard

        self.config = config
        self.sessions = sessions
        self.storage = Storage(config.storage)
        self.worker_id = worker_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        models = config.models() if callable(config.models) else load_model_set(config.models)
        self.guard = Safeguard(models, config.scan)
        self._guards = {bool(config.scan.protect_faces): self.guard}

    def guard_for(self, protect_faces: bool | None):
        """The Safeguard of a job with ``protect_faces`` (None: the service's setting)."""
        from ..pipeline import Safeguard

        faces = bool(self.config.scan.protect_faces if protect_faces is None else protect_faces)
        if faces not in self._guards:
            self._guards[faces] = Safeguard(self.guard.classifiers, self.config.scan.updated(protect_faces=faces))
        return self._guards[faces]

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

    @contextmanager
    def heartbeat(self, scan_id: str):
        """Renew the lease of ``scan_id`` every third of ``lease_s`` while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.config.lease_s / 3):
                try:
                    with self.sessions() as session:
                        session.execute(
                            update(Scan)
                            .where(Scan.id == scan_id, Scan.worker == self.worker_id, Scan.status == "running")
                            .values(lease_until=utcnow() + timedelta(seconds=self.config.lease_s))
                            .execution_options(synchronize_session=False)
                        )
                        session.commit()
                except SQLAlchemyError as exc:  # a busy database: the next beat tries again
                    print(f"safeview: worker {self.worker_id}: lease renewal failed ({exc})", file=sys.stderr, flush=True)

        thread = threading.Thread(target=beat, name=f"safeview-heartbeat-{scan_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def run(self, scan_id: str) -> None:
        """Scan one claimed job and record its outcome: done; back to the queue (an error, while
        attempts remain); or failed (attempts used up, an image that cannot be decoded, or a time
        or memory limit hit)."""
        config = self.config
        with self.sessions() as session:
            scan = session.get(Scan, scan_id)
            sha256, faces = scan.sha256, scan.protect_faces
            user = json.loads(scan.protect_json) if scan.protect_json else []
            reviewer = json.loads(scan.reviewer_protect_json) if scan.reviewer_protect_json else []
        mine = (Scan.id == scan_id, Scan.worker == self.worker_id)
        try:
            with self.heartbeat(scan_id), time_limit(config.job_timeout_s):
                data = self.storage.read_original(sha256)
                loaded = load_image_info(
                    data, max_pixels=config.max_pixels, max_bytes=config.max_bytes,
                    max_aspect=config.max_aspect, max_decoded_bytes=config.max_decoded_bytes,
                )
                protect = job_regions(user, reviewer, loaded.array.shape[:2])
                scanned = self.guard_for(faces).scan(loaded, protect=protect)
                self.storage.delete_outputs(scan_id)  # a re-run's views replace the last run's, none left over
                result = write_scan(scanned, ViewStore(self.storage, scan_id), "scan", document=False)
        except (JobLimitExceeded, ImageError, ProtectError) as exc:  # the same image would fail the same way again
            release(self.sessions, *mine, max_attempts=0, reason=str(exc).replace("<bytes>", "image", 1))
            return
        except Exception as exc:  # noqa: BLE001 - one job's failure is recorded, the worker goes on
            if _out_of_memory(exc):
                reason = f"memory limit of {config.job_memory_mb} MiB per job exceeded ({type(exc).__name__}); the image is too expensive to scan"
                release(self.sessions, *mine, max_attempts=0, reason=reason)
            else:
                release(self.sessions, *mine, max_attempts=config.max_attempts, reason=f"{type(exc).__name__}: {exc}"[:2000])
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
    """Entry point of a worker process: SIGTERM stops it taking jobs; the job in hand finishes
    (the pool kills the process if that takes longer than the grace period)."""
    from safeview.threads import set_threads

    set_threads(1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops its workers itself
    engine = make_engine(config.db_url, pool_size=2)
    try:
        worker = Worker(config, sessionmaker(engine, expire_on_commit=False), worker_id=worker_id)
        worker.guard.warm_up()  # what loads lazily counts as the models, not against the job's limit
        limit_memory(config.job_memory_mb)
        worker.loop(stop)
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
        saved = {name: os.environ.get(name) for name in WORKER_MALLOC}
        os.environ.update({name: os.environ.get(name) or value for name, value in WORKER_MALLOC.items()})
        try:
            process.start()  # a spawned interpreter: glibc reads these when it starts
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
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

    def stop(self, grace: float = 30.0) -> None:
        """Stop every worker: SIGTERM (no new jobs; the one in hand may finish), up to ``grace``
        seconds to exit, then SIGKILL, and the jobs of killed workers handed back to the queue
        (their attempt given back), so a graceful stop runs no job twice and loses none."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join()
        for process in self.processes.values():
            process.terminate()
        deadline = time.monotonic() + grace
        killed = []
        for worker_id, process in self.processes.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
                killed.append(worker_id)
        if killed:
            release(self.sessions, Scan.worker.in_(killed), max_attempts=self.config.max_attempts,
                    reason="handed back: the server stopped while the job ran", hand_back=True)
        self.processes.clear()
        self.started.clear()
