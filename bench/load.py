"""Load and fault benchmark of ``safeview serve`` on loopback (issues 6 and 14).

N client threads submit benign synthetic images (``safeview.synth.make_sample``, stand-ins only)
and poll each scan until it finishes, for a bounded time (``--duration``) and a bounded number of
submissions. The report gives requests/s, p50/p95/p99 latency of a submission and of a finished
scan, responses by status (5xx counted), RSS of the server and its workers at start and end; at
the end every accepted job must be finished, none lost, and every stored original byte-identical
to the upload. ``--fault`` also kills a worker with SIGKILL a third of the way in and, two thirds
in, stops the server with SIGTERM (graceful: workers finish or hand back their job), checks that
no child process outlived it, and starts it again. ``--postgres`` repeats the run on a throwaway
PostgreSQL server started with ``initdb``/``pg_ctl`` (skipped with a note when they are missing).

    python bench/load.py --duration 60 --clients 4 --fault --postgres --out bench/results/load.md
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAFEVIEW = [sys.executable, "-m", "safeview.cli"]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server(work: Path):
    """A throwaway PostgreSQL cluster in ``work`` on a free loopback port (trust auth, run as the
    ``postgres`` user when we are root); yields its SQLAlchemy URL, or None when ``initdb`` or
    ``pg_ctl`` is missing."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        yield None
        return
    data, port = work / "pgdata", free_port()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    work.mkdir(parents=True, exist_ok=True)
    if as_user:  # the cluster runs as postgres: it must reach its folder (traverse only above it)
        work.parent.chmod(0o711)
        shutil.chown(work, "postgres")
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(work / "pg.log"), "-w", "start",
                    "-o", f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c max_connections=200"], check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE safeview_load")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/safeview_load"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)


class Server:
    """``safeview serve`` as a subprocess on a loopback port."""

    def __init__(self, work: Path, port: int, models: str, workers: int, db: str) -> None:
        self.work, self.port, self.models, self.workers, self.db = work, port, models, workers, db
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import httpx

        self.process = subprocess.Popen(
            [*SAFEVIEW, "serve", "--port", str(self.port), "--db", self.db, "--storage", str(self.work / "storage"),
             "--workers", str(self.workers), "--models", self.models, "--rate-limit", "1000000"],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "server.log", "a"), env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start; see {self.work / 'server.log'}")

    def stop(self) -> list[int]:
        """SIGTERM, as a service manager stops it; returns the child processes that outlived it."""
        if not self.process or self.process.poll() is not None:
            return []
        kids = children(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        time.sleep(0.5)
        return [pid for pid in kids if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]

    def pids(self) -> tuple[int | None, list[int]]:
        if not self.process or self.process.poll() is not None:
            return None, []
        return self.process.pid, [p for p in children(self.process.pid) if "spawn_main" in _cmdline(p)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def image_bytes(seed: int, size: int) -> bytes:
    from safeview.synth import CATEGORIES, make_sample

    sample = make_sample(CATEGORIES[seed % len(CATEGORIES)], bool(seed % 2), seed=seed, size=size)
    buffer = io.BytesIO()
    Image.fromarray(sample.image).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_checkpoint(path: Path) -> str:
    """An untrained small CNN (48 px input): measures the service, not a model."""
    import torch

    from safeview import nets
    from safeview.classify import Classifier, Preprocess

    torch.manual_seed(0)
    clf = Classifier.from_module(nets.build("small", 2, width=8), ["safe", "unsafe"], ["unsafe"], name="tiny-untrained", preprocess=Preprocess(resize=(48, 48)))
    clf.save(path, arch="small", arch_kwargs={"width": 8})
    return str(path)


def run(args: argparse.Namespace, work: Path, db: str, database: str) -> str:
    import httpx
    from sqlalchemy import create_engine, select

    from safeview.service.db import Scan

    work.mkdir(parents=True, exist_ok=True)
    models = tiny_checkpoint(work / "tiny.safeview") if args.models == "tiny" else args.models
    server = Server(work, args.port, models, args.workers, db)
    key = subprocess.run([*SAFEVIEW, "keys", "create", "--role", "admin", "--db", server.db], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    server.start()
    base, headers = f"http://127.0.0.1:{args.port}", {"X-API-Key": key}
    expected = {}  # index -> sha256 of the image uploaded as that index (the bytes are made again to compare)

    lock = threading.Lock()
    counter = iter(range(args.max_requests))
    submit_latency: list[float] = []
    scan_latency: list[float] = []
    statuses: Counter[str] = Counter()
    accepted: dict[str, int] = {}  # scan id -> index of the uploaded image
    requests_done = [0]
    t_start = time.monotonic()
    stop_at = t_start + args.duration
    rss = {"server": [], "workers": []}
    events: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            while time.monotonic() < stop_at:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                data = image_bytes(index, args.size)  # made by the client, so --max-requests costs no memory
                t0 = time.monotonic()
                while True:  # a submission is retried through a server restart (it is idempotent)
                    try:
                        response = http.post("/v1/scans", files={"file": (f"{index}.png", data, "image/png")})
                        break
                    except httpx.TransportError:
                        with lock:
                            statuses["connection error"] += 1
                        time.sleep(0.5)
                with lock:
                    requests_done[0] += 1
                    statuses[str(response.status_code)] += 1
                    submit_latency.append(time.monotonic() - t0)
                if response.status_code != 202:
                    continue
                scan_id = response.json()["id"]
                with lock:
                    accepted[scan_id] = index
                    expected[index] = hashlib.sha256(data).hexdigest()
                while time.monotonic() < stop_at + args.drain:
                    try:
                        poll = http.get(f"/v1/scans/{scan_id}")
                    except httpx.TransportError:
                        with lock:
                            statuses["connection error"] += 1
                        time.sleep(0.5)
                        continue
                    with lock:
                        requests_done[0] += 1
                        statuses[str(poll.status_code)] += 1
                    if poll.status_code == 200 and poll.json()["status"] in ("done", "failed"):
                        with lock:
                            scan_latency.append(time.monotonic() - t0)
                        break
                    time.sleep(args.poll)

    def monitor() -> None:
        while time.monotonic() < stop_at + args.drain and not finished.is_set():
            server_pid, workers = server.pids()
            if server_pid:
                rss["server"].append((time.monotonic() - t_start, rss_mb(server_pid)))
                rss["workers"].append((time.monotonic() - t_start, sum(rss_mb(p) for p in workers)))
            time.sleep(0.5)

    def faults() -> None:
        time.sleep(args.duration / 3)
        _, workers = server.pids()
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            events.append(f"t={time.monotonic() - t_start:.1f}s: SIGKILL worker {workers[0]}")
        time.sleep(args.duration / 3)
        events.append(f"t={time.monotonic() - t_start:.1f}s: server stopped (SIGTERM)")
        survivors = server.stop()
        events.append(f"t={time.monotonic() - t_start:.1f}s: stopped; child processes that outlived it: {len(survivors)}")
        server.start()
        events.append(f"t={time.monotonic() - t_start:.1f}s: server restarted")

    finished = threading.Event()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    helpers = [threading.Thread(target=monitor, daemon=True)] + ([threading.Thread(target=faults, daemon=True)] if args.fault else [])
    for t in threads + helpers:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start
    finished.set()
    if args.fault:
        helpers[1].join()

    # -- verification: every accepted job finished exactly once; every original intact -------------
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline:
        counts = Counter(httpx.get(f"{base}/v1/scans/{i}", headers=headers).json()["status"] for i in accepted)
        if counts["queued"] + counts["running"] == 0:
            break
        time.sleep(1)
    rss_end = {name: (rss[name][-1][1] if rss[name] else float("nan")) for name in rss}
    survivors = server.stop()
    engine = create_engine(db)
    with engine.connect() as connection:
        rows = {sid: (sha, status, attempts) for sid, sha, status, attempts in connection.execute(select(Scan.id, Scan.sha256, Scan.status, Scan.attempts))}
    engine.dispose()
    final = Counter(rows[i][1] if i in rows else "lost" for i in accepted)
    wrong_sha = sum(1 for i, index in accepted.items() if i in rows and rows[i][0] != expected[index])
    attempts = Counter(rows[i][2] for i in accepted if i in rows)
    stored = [p for p in (work / "storage" / "originals").rglob("*") if p.is_file()]
    altered = sum(1 for p in stored if hashlib.sha256(p.read_bytes()).hexdigest() != p.name)
    original = {i: work / "storage" / "originals" / rows[i][0][:2] / rows[i][0] for i in accepted if i in rows}
    missing = sum(1 for path in original.values() if not path.is_file())
    identical = sum(1 for i, path in original.items() if path.is_file() and path.read_bytes() == image_bytes(accepted[i], args.size))

    def rss_line(name: str) -> str:
        values = [v for _, v in rss[name]]
        if not values:
            return f"| {name} | n/a | n/a | n/a | n/a |"
        warm = [v for t, v in rss[name] if t >= elapsed / 3] or values
        return f"| {name} | {values[0]:.0f} | {warm[0]:.0f} | {rss_end[name]:.0f} | {max(values):.0f} |"

    lines = [
        f"# Load run of `safeview serve` on {database} ({'with faults' if args.fault else 'no faults'})",
        "",
        f"Command: `python bench/load.py --duration {args.duration:g} --clients {args.clients} --workers {args.workers} "
        f"--max-requests {args.max_requests} --size {args.size} --models {args.models}{' --fault' if args.fault else ''}"
        f"{' --postgres' if args.postgres else ''}`",
        f"Machine: {os.cpu_count()} CPU cores (shared), {database} database, loopback. Models: "
        + ("an untrained 48-px small CNN (measures the service, not a model)" if args.models == "tiny" else args.models),
        "",
        f"- load phase: {elapsed:.1f} s, {requests_done[0]} HTTP requests ({requests_done[0] / elapsed:.1f} requests/s), "
        f"{len(accepted)} images accepted ({len(scan_latency) / elapsed:.2f} finished scans/s)",
        f"- submit latency: p50 {percentile(submit_latency, 50) * 1000:.0f} ms, p95 {percentile(submit_latency, 95) * 1000:.0f} ms, "
        f"p99 {percentile(submit_latency, 99) * 1000:.0f} ms",
        f"- submit-to-finished latency: p50 {percentile(scan_latency, 50):.2f} s, p95 {percentile(scan_latency, 95):.2f} s, "
        f"p99 {percentile(scan_latency, 99):.2f} s ({len(scan_latency)} observed by clients)",
        "- responses by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
        f"- 5xx responses: {sum(v for k, v in statuses.items() if k.startswith('5'))}",
        f"- accepted jobs by final status: {dict(final)}; lost: {final['lost']}; attempts per job: {dict(sorted(attempts.items()))} "
        f"(a job is run twice only when its worker was SIGKILLed mid-job: {sum(n for a, n in attempts.items() if a > 1)} such jobs)",
        f"- originals stored: {len(stored)}; byte-identical to the upload: {identical} of {len(original)}; altered: {altered}; "
        f"missing: {missing}; scan rows whose sha256 differs from the upload: {wrong_sha}",
        f"- child processes left after the final SIGTERM: {len(survivors)}",
        "",
        "| process | RSS at start MB | RSS after warm-up MB | RSS at end of load MB | peak RSS MB |",
        "|---|---|---|---|---|",
        rss_line("server"),
        rss_line("workers"),
    ]
    if events:
        during = "during the load" if args.duration * 2 / 3 < elapsed else f"after the load ended at t={elapsed:.0f}s (--max-requests reached)"
        lines += ["", f"Faults injected ({during}):", *[f"- {e}" for e in events]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (the issue's full run: 600)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--max-requests", type=int, default=100_000, help="most images submitted in all (the run is bounded by --duration first)")
    parser.add_argument("--size", type=int, default=128, help="side of the submitted images, px")
    parser.add_argument("--models", default="tiny", help="'tiny' (untrained small CNN, written by this script) or a --models spec")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between status polls")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds allowed after the load for pending jobs")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--fault", action="store_true", help="kill a worker, stop the server with SIGTERM and restart it during the run")
    parser.add_argument("--postgres", action="store_true", help="run once more on a throwaway PostgreSQL server (initdb/pg_ctl)")
    parser.add_argument("--out", type=Path, help="append the report to this Markdown file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="safeview-load-"))
    report = run(args, work / "sqlite", f"sqlite:///{work}/sqlite/service.db", "SQLite")
    if args.postgres:
        with postgres_server(work / "pg") as url:
            report += "\n" + (run(args, work / "postgres", url, "PostgreSQL") if url else "PostgreSQL run skipped: initdb/pg_ctl not found\n")
    sys.stdout.write(report)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(report + "\n")


if __name__ == "__main__":
    main()
