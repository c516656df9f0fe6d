"""The persisted work queue and the evidence store: atomic claims, bounded retries, recovery of
jobs after a restart or a dead worker, real worker processes, and write-once verified originals."""

import hashlib
import io
import os
import stat
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select, update  # noqa: E402

from safeview.service.app import create_app  # noqa: E402
from safeview.service.auth import create_key  # noqa: E402
from safeview.service.config import ServiceConfig  # noqa: E402
from safeview.service.db import Scan, utcnow  # noqa: E402
from safeview.service.storage import Storage, StorageError  # noqa: E402
from safeview.service.worker import Worker, WorkerPool  # noqa: E402
from test_service_api import PG_URL, reset_postgres  # noqa: E402  (a sibling test module)


def png(seed: int) -> bytes:
    array = np.random.default_rng(seed).integers(0, 200, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_models():
    """A tiny untrained classifier: the queue's behaviour, not the verdict, is under test."""
    import torch

    from safeview import nets
    from safeview.classify import Classifier, Preprocess

    torch.manual_seed(0)
    return [Classifier.from_module(nets.build("small", 2, width=8), ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(48, 48)))]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db.sqlite"
    if not PG_URL:
        pytest.skip("SAFEVIEW_TEST_PG_URL is not set (eval \"$(.ci/services.sh)\" starts a PostgreSQL server)")
    reset_postgres(PG_URL)
    return PG_URL


def service(root, url=None, **overrides):
    url = url or f"sqlite:///{root}/db.sqlite"
    config = ServiceConfig(db_url=url, storage=root / "storage", models=tiny_models, **overrides)
    app = create_app(config)
    with app.state.sessions() as session:
        key = create_key(session, "admin")
    return config, app, TestClient(app), {"X-API-Key": key}


def submit_all(client, headers, seeds) -> list[str]:
    return [client.post("/v1/scans", files={"file": (f"{s}.png", png(s))}, headers=headers).json()["id"] for s in seeds]


def statuses(app, ids) -> list[str]:
    with app.state.sessions() as session:
        return [session.get(Scan, i).status for i in ids]


def test_pending_jobs_survive_a_restart(tmp_path, db_url):
    config, app, client, headers = service(tmp_path, db_url)
    ids = submit_all(client, headers, range(3))
    with app.state.sessions() as session:  # one job was being scanned when the server went down
        session.execute(update(Scan).where(Scan.id == ids[0]).values(status="running", attempts=1, worker="w-gone", lease_until=utcnow()))
        session.commit()
    app.state.engine.dispose()

    config, app, client, headers = service(tmp_path, db_url)  # restart on the same database and storage
    assert statuses(app, ids) == ["running", "queued", "queued"]
    time.sleep(0.01)  # the lease of the lost job has run out
    assert Worker(config, app.state.sessions).drain() == 3
    assert statuses(app, ids) == ["done"] * 3
    with app.state.sessions() as session:
        assert session.get(Scan, ids[0]).attempts == 2
    app.state.engine.dispose()


def test_a_failing_job_is_retried_a_bounded_number_of_times_then_failed(tmp_path):
    config, app, client, headers = service(tmp_path, max_attempts=2)
    [scan_id] = submit_all(client, headers, [7])
    storage = Storage(config.storage)
    with app.state.sessions() as session:
        path = storage.original_path(session.get(Scan, scan_id).sha256)
    os.chmod(path, 0o644)
    path.write_bytes(png(8))  # the evidence was altered behind the service's back
    assert Worker(config, app.state.sessions).drain() == 2
    status = client.get(f"/v1/scans/{scan_id}", headers=headers).json()
    assert status["status"] == "failed" and status["attempts"] == 2 and "fails verification" in status["error"]
    assert client.get(f"/v1/scans/{scan_id}/original", params={"reason": "check"}, headers=headers).status_code == 500
    app.state.engine.dispose()


def test_concurrent_workers_claim_each_job_exactly_once(tmp_path, db_url):
    config, app, client, headers = service(tmp_path, db_url)
    ids = submit_all(client, headers, range(10, 16))
    workers = [Worker(config, app.state.sessions, worker_id=f"w{i}") for i in range(3)]
    claimed: list[str] = []
    lock = threading.Lock()

    def claim_all(worker):
        while (job := worker.claim()) is not None:
            with lock:
                claimed.append(job)

    threads = [threading.Thread(target=claim_all, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
    app.state.engine.dispose()


def test_worker_processes_drain_the_queue_and_a_dead_workers_job_is_released(tmp_path):
    checkpoint = tmp_path / "tiny.safeview"
    tiny_models()[0].save(checkpoint, arch="small", arch_kwargs={"width": 8})
    config, app, client, headers = service(tmp_path)
    config.models, config.poll_s = str(checkpoint), 0.1
    ids = submit_all(client, headers, range(20, 23))
    with app.state.sessions() as session:  # left running by a worker of the previous server
        session.execute(update(Scan).where(Scan.id == ids[0]).values(status="running", attempts=1, worker="w-old"))
        session.commit()
    pool = WorkerPool(config, app.state.sessions, 1, check_s=0.2)
    pool.start()
    try:
        deadline = time.monotonic() + 90
        while statuses(app, ids) != ["done"] * 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert statuses(app, ids) == ["done"] * 3
        [pid] = pool.pids()
        os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while (not pool.pids() or pool.pids() == [pid]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.pids() and pool.pids() != [pid]  # the dead worker was replaced
    finally:
        pool.stop()
    with app.state.sessions() as session:
        assert session.scalars(select(Scan.worker).where(Scan.id.in_(ids))).all().count("w-old") == 0
    app.state.engine.dispose()


def test_originals_are_written_once_read_only_and_verified(tmp_path):
    storage = Storage(tmp_path)
    data = png(1)
    sha = storage.put_original(data)
    path = storage.original_path(sha)
    assert sha == hashlib.sha256(data).hexdigest() and path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o400 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    inode = path.stat().st_ino
    assert storage.put_original(data) == sha and path.stat().st_ino == inode  # not rewritten
    assert storage.read_original(sha) == data
    os.chmod(path, 0o644)
    path.write_bytes(data[:-1] + b"\0")
    with pytest.raises(StorageError, match="altered"):
        storage.read_original(sha)
    with pytest.raises(StorageError, match="altered"):
        storage.put_original(data)  # an altered copy is reported, never silently replaced
    with pytest.raises(StorageError, match="missing"):
        storage.read_original("0" * 64)
    for bad in ("../" + "0" * 61, "A" * 64, ""):
        with pytest.raises(ValueError):
            storage.original_path(bad)
    with pytest.raises(ValueError):
        storage.put_output("../x", "blurred.jpg", b"")


def test_the_migration_matches_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from safeview.service.db import Base, open_database

    engine, _ = open_database(f"sqlite:///{tmp_path}/m.sqlite")
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
