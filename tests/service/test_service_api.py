"""The service API end to end (FastAPI TestClient): every endpoint, roles, and every error, on
SQLite and — when SAFEVIEW_TEST_PG_URL names one — on a real PostgreSQL server.

Scans use the hand-built red detector of tests/conftest.py, so a red square is "unsafe" and a
plain photo is "safe", deterministically and fast."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
from scenes import RedDetector  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest)
from fastapi.testclient import TestClient  # noqa: E402

from safeview.schema import ScanResult  # noqa: E402
from safeview.service.app import create_app  # noqa: E402
from safeview.service.auth import create_key  # noqa: E402
from safeview.service.config import ServiceConfig  # noqa: E402
from safeview.service.worker import Worker  # noqa: E402

PG_URL = os.environ.get("SAFEVIEW_TEST_PG_URL")


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge canvas (what a decompression bomb looks like)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def reset_postgres(url: str) -> None:
    """Empty the test database (refused unless its name says it is one)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if "test" not in (make_url(url).database or ""):
        pytest.fail(f"SAFEVIEW_TEST_PG_URL must name a throwaway database with 'test' in its name, not {make_url(url).database!r}")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def svc(request, tmp_path_factory, photo):
    """A service with one key per role, a worker, and a safe and an unsafe image."""
    root = tmp_path_factory.mktemp(f"service-{request.param}")
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("SAFEVIEW_TEST_PG_URL is not set (eval \"$(.ci/services.sh)\" starts a PostgreSQL server)")
        reset_postgres(PG_URL)
        url = PG_URL
    else:
        url = f"sqlite:///{root}/safeview.db"
    config = ServiceConfig(
        db_url=url, storage=root / "storage", models=lambda: [RedDetector.build()], max_bytes=300_000, max_pixels=250_000,
        scan={"segmentation": "slic", "segmentation_params": {"n_segments": 40, "compactness": 10}},
    )
    app = create_app(config)
    with app.state.sessions() as session:
        keys = {role: create_key(session, role) for role in ("submitter", "reviewer", "admin")}
    unsafe = photo.copy()
    unsafe[10:34, 56:80] = (255, 0, 0)
    with TestClient(app) as client:
        yield {
            "client": client, "app": app, "config": config, "keys": keys, "worker": Worker(config, app.state.sessions),
            "safe": png(photo), "unsafe": png(unsafe), "root": root,
        }
    app.state.engine.dispose()


def h(svc, role: str) -> dict:
    return {"X-API-Key": svc["keys"][role]}


def submit(svc, data: bytes, role: str = "submitter"):
    return svc["client"].post("/v1/scans", files={"file": ("upload.png", data, "image/png")}, headers=h(svc, role))


@pytest.fixture(scope="module")
def scanned(svc):
    """Ids of the unsafe and the safe image, scanned."""
    ids = {name: submit(svc, svc[name]).json()["id"] for name in ("unsafe", "safe")}
    svc["worker"].drain()
    return ids


def originals(svc) -> list:
    return sorted(p for p in (svc["root"] / "storage" / "originals").rglob("*") if p.is_file())


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["status"] == status
    return body["error"]["message"]


def test_health_needs_no_key_and_openapi_lists_the_api(svc):
    assert svc["client"].get("/health").json()["status"] == "ok"
    paths = svc["client"].get("/openapi.json").json()["paths"]
    for path in ("/v1/scans", "/v1/scans/{scan_id}", "/v1/scans/{scan_id}/original", "/v1/scans/{scan_id}/decision", "/v1/scans/{scan_id}/decisions", "/v1/queue", "/v1/audit", "/v1/keys", "/metrics"):
        assert path in paths


def test_submit_is_queued_then_done_with_a_valid_result(svc):
    first = submit(svc, svc["unsafe"])
    assert first.status_code == 202
    scan_id = first.json()["id"]
    again = submit(svc, svc["unsafe"])  # the same bytes from the same key: the same scan
    assert again.status_code == 202 and again.json()["id"] == scan_id and again.json()["duplicate"]
    status = svc["client"].get(f"/v1/scans/{scan_id}", headers=h(svc, "submitter")).json()
    assert status["status"] in ("queued", "done")
    svc["worker"].drain()
    status = svc["client"].get(f"/v1/scans/{scan_id}", headers=h(svc, "submitter")).json()
    assert status["status"] == "done" and status["verdict"] == "unsafe" and status["flagged"] == ["cyberbullying"]
    result = ScanResult.model_validate(status["result"])
    assert result.counterfactuals[0].found and result.obfuscated_fraction < 0.5


def test_views_hide_the_original(svc, scanned):
    client, uid, sid = svc["client"], scanned["unsafe"], scanned["safe"]
    original = np.asarray(Image.open(io.BytesIO(svc["unsafe"])).convert("RGB"))
    obfuscated = client.get(f"/v1/scans/{uid}/views/obfuscated", headers=h(svc, "submitter"))
    assert obfuscated.status_code == 200 and obfuscated.headers["content-type"] == "image/png"
    view = np.asarray(Image.open(io.BytesIO(obfuscated.content)).convert("RGB"))
    assert view.shape == original.shape
    red = (original[..., 0] == 255) & (original[..., 1] == 0)
    assert not ((view[..., 0] == 255) & (view[..., 1] == 0))[red].any()  # the red square is obfuscated
    for name in ("blurred", "heatmap-0", "regions-0"):
        assert client.get(f"/v1/scans/{uid}/views/{name}", headers=h(svc, "submitter")).headers["content-type"] == "image/jpeg"
    assert "blurred" in error_of(client.get(f"/v1/scans/{sid}/views/obfuscated", headers=h(svc, "submitter")), 404)
    assert client.get(f"/v1/scans/{sid}/views/blurred", headers=h(svc, "submitter")).status_code == 200
    error_of(client.get(f"/v1/scans/{uid}/views/..%2F..%2Fetc%2Fpasswd", headers=h(svc, "submitter")), 404)
    error_of(client.get(f"/v1/scans/{uid}/views/original", headers=h(svc, "submitter")), 404)


@pytest.mark.parametrize(
    "name, status, words",
    [
        ("text", 422, "not a recognised image"),
        ("empty", 422, "empty"),
        ("too_many_bytes", 413, "limit"),
        ("too_many_pixels", 422, "MP limit"),
        ("bomb", 422, "decompression bomb"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_stored(svc, name, status, words):
    before_files = originals(svc)
    before = svc["client"].get("/metrics", headers=h(svc, "admin")).text
    rng = np.random.default_rng(0)
    payload = {
        "text": b"hello, this is not an image",
        "empty": b"",
        "too_many_bytes": png(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)),
        "too_many_pixels": png(np.zeros((600, 600, 3), np.uint8)),
        "bomb": bomb_png(),
    }[name]
    assert words in error_of(submit(svc, payload), status)
    assert originals(svc) == before_files
    after = svc["client"].get("/metrics", headers=h(svc, "admin")).text
    count = [line for line in before.splitlines() if line.startswith('safeview_scans_total{status="queued"}')]
    assert count == [line for line in after.splitlines() if line.startswith('safeview_scans_total{status="queued"}')]


def test_damage_past_the_header_fails_the_job_at_once(svc):
    """The request checks only the header (no decoding in the API); the worker finds the damage
    and fails the job with the reason, without retrying a file that cannot change."""
    response = submit(svc, svc["safe"][: len(svc["safe"]) // 2])
    assert response.status_code == 202
    svc["worker"].drain()
    status = svc["client"].get(f"/v1/scans/{response.json()['id']}", headers=h(svc, "submitter")).json()
    assert status["status"] == "failed" and status["attempts"] == 1 and "truncated" in status["error"]


def test_missing_file_field_is_a_json_422(svc):
    response = svc["client"].post("/v1/scans", data={"image": "x"}, headers=h(svc, "submitter"))
    assert "file" in error_of(response, 422)


def test_missing_or_invalid_key_is_401(svc, scanned):
    for headers in ({}, {"X-API-Key": "sv_not-a-key"}):
        for method, path in (("get", f"/v1/scans/{scanned['safe']}"), ("get", "/v1/queue"), ("get", "/metrics"), ("get", "/v1/audit")):
            error_of(getattr(svc["client"], method)(path, headers=headers), 401)
        error_of(svc["client"].post("/v1/scans", files={"file": ("a.png", svc["safe"])}, headers=headers), 401)


def test_roles_are_enforced_403(svc, scanned):
    client, uid = svc["client"], scanned["unsafe"]
    sub, rev = h(svc, "submitter"), h(svc, "reviewer")
    assert "reviewer" in error_of(client.get(f"/v1/scans/{uid}/original", params={"reason": "look"}, headers=sub), 403)
    error_of(client.post(f"/v1/scans/{uid}/decision", json={"action": "approve", "version": 0}, headers=sub), 403)
    error_of(client.get("/v1/queue", headers=sub), 403)
    error_of(client.get("/v1/audit", headers=rev), 403)
    error_of(client.delete(f"/v1/scans/{uid}", params={"reason": "nope"}, headers=rev), 403)


def test_unknown_ids_are_404(svc):
    client, rev, adm = svc["client"], h(svc, "reviewer"), h(svc, "admin")
    for bad in ("0" * 32, "not-an-id"):
        error_of(client.get(f"/v1/scans/{bad}", headers=rev), 404)
        error_of(client.get(f"/v1/scans/{bad}/views/blurred", headers=rev), 404)
        error_of(client.get(f"/v1/scans/{bad}/original", params={"reason": "check"}, headers=rev), 404)
        error_of(client.post(f"/v1/scans/{bad}/decision", json={"action": "approve", "version": 0}, headers=rev), 404)
        error_of(client.delete(f"/v1/scans/{bad}", params={"reason": "check"}, headers=adm), 404)


def test_revealing_the_original_needs_a_reason_and_is_audited(svc, scanned):
    client, uid = svc["client"], scanned["unsafe"]
    error_of(client.get(f"/v1/scans/{uid}/original", headers=h(svc, "reviewer")), 422)
    response = client.get(f"/v1/scans/{uid}/original", params={"reason": "verify report 17"}, headers=h(svc, "reviewer"))
    assert response.status_code == 200 and response.content == svc["unsafe"] and response.headers["content-type"] == "image/png"
    log = client.get("/v1/audit", params={"action": "reveal_original", "scan_id": uid}, headers=h(svc, "admin")).json()
    event = log["items"][0]
    assert event["reason"] == "verify report 17" and event["role"] == "reviewer"
    assert svc["keys"]["reviewer"].startswith(event["key"]) and event["at"].endswith("Z")


def test_decisions_and_the_review_queue(svc, scanned):
    client, rev = svc["client"], h(svc, "reviewer")
    queue = client.get("/v1/queue", headers=rev).json()
    ids = [item["id"] for item in queue["items"]]
    assert scanned["unsafe"] in ids and scanned["safe"] in ids and ids.index(scanned["unsafe"]) < ids.index(scanned["safe"])
    assert [i["id"] for i in client.get("/v1/queue", params={"category": "cyberbullying"}, headers=rev).json()["items"]] == [scanned["unsafe"]]
    assert client.get("/v1/queue", params={"category": "sexual"}, headers=rev).json()["total"] == 0
    assert [i["id"] for i in client.get("/v1/queue", params={"verdict": "safe"}, headers=rev).json()["items"]] == [scanned["safe"]]
    page = client.get("/v1/queue", params={"limit": 1, "offset": 1}, headers=rev).json()
    assert page["total"] == queue["total"] and [i["id"] for i in page["items"]] == ids[1:2]
    error_of(client.get("/v1/queue", params={"limit": 0}, headers=rev), 422)
    error_of(client.get("/v1/queue", params={"status": "lost"}, headers=rev), 422)

    error_of(client.post(f"/v1/scans/{scanned['unsafe']}/decision", json={"action": "ignore", "version": 0}, headers=rev), 422)
    decided = client.post(f"/v1/scans/{scanned['unsafe']}/decision", json={"action": "remove", "note": "stand-in symbol", "version": 0}, headers=rev)
    assert decided.status_code == 200 and decided.json()["decision"] == "remove"
    assert scanned["unsafe"] not in [i["id"] for i in client.get("/v1/queue", headers=rev).json()["items"]]
    assert scanned["unsafe"] in [i["id"] for i in client.get("/v1/queue", params={"decided": True}, headers=rev).json()["items"]]
    log = client.get("/v1/audit", params={"scan_id": scanned["unsafe"], "action": "remove"}, headers=h(svc, "admin")).json()
    assert log["items"][0]["reason"] == "stand-in symbol"


def test_a_queued_scan_cannot_be_decided_yet(svc, photo):
    variant = photo.copy()
    variant[0, 0] = (1, 2, 3)
    scan_id = submit(svc, png(variant)).json()["id"]
    assert "queued" in error_of(svc["client"].post(f"/v1/scans/{scan_id}/decision", json={"action": "approve", "version": 0}, headers=h(svc, "reviewer")), 409)
    assert error_of(svc["client"].get(f"/v1/scans/{scan_id}/views/blurred", headers=h(svc, "reviewer")), 409)
    svc["worker"].drain()


def test_metrics_are_prometheus_text(svc, scanned):
    text = svc["client"].get("/metrics", headers=h(svc, "reviewer")).text
    assert 'safeview_queue_depth{status="queued"}' in text
    done = next(line for line in text.splitlines() if line.startswith('safeview_scans_total{status="done"}'))
    assert int(done.split()[-1]) >= 2
    count = next(line for line in text.splitlines() if line.startswith("safeview_scan_latency_seconds_count"))
    inf = next(line for line in text.splitlines() if 'le="+Inf"' in line)
    assert count.split()[-1] == inf.split()[-1] == done.split()[-1]


def test_admin_delete_is_audited_and_removes_the_files(svc, photo):
    variant = photo.copy()
    variant[0, 0] = (9, 9, 9)
    data = png(variant)
    scan_id = submit(svc, data).json()["id"]
    svc["worker"].drain()
    count = len(originals(svc))
    error_of(svc["client"].delete(f"/v1/scans/{scan_id}", headers=h(svc, "admin")), 422)  # a reason is required
    assert svc["client"].delete(f"/v1/scans/{scan_id}", params={"reason": "duplicate upload"}, headers=h(svc, "admin")).json()["deleted"]
    assert len(originals(svc)) == count - 1
    error_of(svc["client"].get(f"/v1/scans/{scan_id}", headers=h(svc, "admin")), 404)
    log = svc["client"].get("/v1/audit", params={"action": "delete"}, headers=h(svc, "admin")).json()
    assert log["items"][0]["scan_id"] == scan_id and log["items"][0]["reason"] == "duplicate upload"


def test_rate_limit_is_per_key_429(tmp_path, photo):
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path}/db.sqlite", storage=tmp_path / "s", models=lambda: [], rate_limit=3, rate_window=600)
    app = create_app(config)
    with app.state.sessions() as session:
        first, second = create_key(session, "submitter"), create_key(session, "submitter")
    client = TestClient(app)
    assert [client.get("/v1/me", headers={"X-API-Key": first}).status_code for _ in range(3)] == [200] * 3
    assert "rate limit" in error_of(client.get("/v1/me", headers={"X-API-Key": first}), 429)
    assert client.get("/v1/me", headers={"X-API-Key": second}).status_code == 200
    app.state.engine.dispose()


def test_keys_cli_prints_the_key_once_and_stores_only_its_hash(tmp_path):
    from typer.testing import CliRunner

    from safeview.cli import app as cli

    url = f"sqlite:///{tmp_path}/keys.db"
    result = CliRunner().invoke(cli, ["keys", "create", "--role", "reviewer", "--db", url])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("sv_") and len(key) > 40
    assert key.encode() not in (tmp_path / "keys.db").read_bytes()
    app = create_app(ServiceConfig(db_url=url, storage=tmp_path / "s", models=lambda: []))
    me = TestClient(app).get("/v1/me", headers={"X-API-Key": key}).json()
    assert me["role"] == "reviewer"
    app.state.engine.dispose()
    bad = CliRunner().invoke(cli, ["keys", "create", "--role", "boss", "--db", url])
    assert bad.exit_code == 2


def test_ui_is_served_without_secrets(svc):
    page = svc["client"].get("/ui")
    assert page.status_code == 200 and "Sign in" in page.text and "Content-Security-Policy" in page.headers
    assert "decide(" in svc["client"].get("/ui/review.js").text
