"""Protected regions through the service (issue 16): submitted with a scan (boxes and polygons
only, bounded, validated in the request, part of deduplication), honoured by the worker, listed in
the result with the share kept; a reviewer adds one and re-runs the scan (a new result version,
the old one kept, audited), with roles and tenancy as everywhere else.

Scans use the hand-built red detector of tests/conftest.py: the red square is the "unsafe"
content, and the rest of the photo is safe context that protection must keep bit-identical."""

import io
import json

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

RED = (slice(10, 34), slice(56, 80))  # rows, columns of the red square
FACE = [0, 50, 30, 90]  # x0, y0, x1, y1: far from the red square
TATTOO = [[30, 60], [45, 60], [38, 75]]
#: left of the red square, where completion's rim lands when nothing protects it
BESIDE = [48, 8, 56, 36]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def svc(tmp_path_factory, photo):
    root = tmp_path_factory.mktemp("service-protect")
    config = ServiceConfig(
        db_url=f"sqlite:///{root}/safeview.db", storage=root / "storage", models=lambda: [RedDetector.build()],
        max_bytes=300_000, max_pixels=250_000,
        scan={"segmentation": "slic", "segmentation_params": {"n_segments": 40, "compactness": 10}},
    )
    app = create_app(config)
    with app.state.sessions() as session:
        keys = {name: create_key(session, role) for name, role in
                (("submitter", "submitter"), ("other", "submitter"), ("reviewer", "reviewer"), ("admin", "admin"))}
    unsafe = photo.copy()
    unsafe[RED] = (255, 0, 0)
    with TestClient(app) as client:
        yield {"client": client, "app": app, "keys": keys, "worker": Worker(config, app.state.sessions),
               "unsafe": unsafe, "safe": photo, "root": root}
    app.state.engine.dispose()


def h(svc, name: str) -> dict:
    return {"X-API-Key": svc["keys"][name]}


def submit(svc, image: np.ndarray, protect=None, key: str = "submitter", **form):
    data = dict(form)
    if protect is not None:
        data["protect"] = protect if isinstance(protect, str) else json.dumps(protect)
    return svc["client"].post("/v1/scans", files={"file": ("upload.png", png(image), "image/png")}, data=data, headers=h(svc, key))


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


def status(svc, scan_id: str, key: str = "submitter") -> dict:
    response = svc["client"].get(f"/v1/scans/{scan_id}", headers=h(svc, key))
    assert response.status_code == 200, response.text
    return response.json()


def obfuscated(svc, scan_id: str) -> np.ndarray:
    response = svc["client"].get(f"/v1/scans/{scan_id}/views/obfuscated", headers=h(svc, "submitter"))
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def box_pixels(box) -> tuple[slice, slice]:
    x0, y0, x1, y1 = box
    return slice(y0, y1), slice(x0, x1)


def originals(svc) -> list:
    return sorted(p for p in (svc["root"] / "storage" / "originals").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def protected_scan(svc):
    """The unsafe image submitted with a face box and a tattoo polygon, scanned."""
    response = submit(svc, svc["unsafe"], [{"box": FACE, "label": "face"}, {"polygon": TATTOO, "label": "tattoo"}])
    assert response.status_code == 202, response.text
    svc["worker"].drain()
    return response.json()["id"]


def test_submitted_regions_are_listed_with_their_share_kept(svc, protected_scan):
    body = status(svc, protected_scan)
    assert body["status"] == "done" and body["verdict"] == "unsafe"
    assert body["protect"] == [{"box": FACE, "label": "face"}, {"polygon": TATTOO, "label": "tattoo"}]
    result = ScanResult.model_validate(body["result"])
    listed = {r.label: r for r in result.protected}
    assert set(listed) == {"face", "tattoo"} and {r.source for r in result.protected} == {"user"}
    assert listed["face"].box == FACE and listed["face"].pixels == 30 * 40 and listed["face"].kept == 1.0
    assert listed["tattoo"].kept == 1.0
    view = obfuscated(svc, protected_scan)
    assert np.array_equal(view[box_pixels(FACE)], svc["unsafe"][box_pixels(FACE)])  # bit-identical
    assert not (view[RED] == (255, 0, 0)).all(axis=-1).any()  # and the content is still hidden
    evidence = svc["client"].get(f"/v1/scans/{protected_scan}/views/evidence", headers=h(svc, "submitter"))
    assert evidence.status_code == 200 and evidence.headers["content-type"] == "image/jpeg"


def test_deduplication_includes_the_protection_per_tenant(svc, protected_scan):
    same = submit(svc, svc["unsafe"], ' [ {"label": "face", "box": [0.0, 50, 30, 90]}, {"polygon": [[30,60],[45,60],[38,75]], "label": "tattoo"} ] ')
    assert same.json()["id"] == protected_scan and same.json()["duplicate"]  # the same protection, written otherwise
    plain = submit(svc, svc["unsafe"])
    other_box = submit(svc, svc["unsafe"], [{"box": FACE, "label": "face"}])
    faces = submit(svc, svc["unsafe"], [{"box": FACE, "label": "face"}, {"polygon": TATTOO, "label": "tattoo"}], protect_faces="true")
    tenant = submit(svc, svc["unsafe"], [{"box": FACE, "label": "face"}, {"polygon": TATTOO, "label": "tattoo"}], key="other")
    ids = [protected_scan] + [r.json()["id"] for r in (plain, other_box, faces, tenant)]
    assert len(set(ids)) == 5 and not any(r.json()["duplicate"] for r in (plain, other_box, faces, tenant))
    assert submit(svc, svc["unsafe"], []).json()["id"] == plain.json()["id"]  # an empty list is no protection
    assert submit(svc, svc["unsafe"], protect_faces="false").json()["id"] == plain.json()["id"]  # the default, said
    svc["worker"].drain()


def test_protect_faces_is_honoured_per_scan(svc, monkeypatch):
    """The built-in detector finds no face in a 96-pixel photo, so a stand-in reports one: what
    matters here is that the job's setting, not the service's, decides whether it runs."""
    import safeview.faces
    from safeview.protect import ProtectedRegion

    def fake_faces(image):
        mask = np.zeros(image.shape[:2], bool)
        mask[60:90, 5:25] = True
        return [ProtectedRegion(mask, label="face", source="faces", detector="stand-in")]

    monkeypatch.setattr(safeview.faces, "detect_faces", fake_faces)
    variant = svc["unsafe"].copy()
    variant[95, 95] = (1, 2, 3)
    on, off = submit(svc, variant, protect_faces="true").json()["id"], submit(svc, variant).json()["id"]
    svc["worker"].drain()
    assert [(r["source"], r["detector"], r["kept"]) for r in status(svc, on)["result"]["protected"]] == [("faces", "stand-in", 1.0)]
    assert status(svc, on)["protect_faces"] is True
    assert status(svc, off)["result"]["protected"] == [] and status(svc, off)["protect_faces"] is False


def polygon(n: int) -> list:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [[round(48 + 20 * np.cos(a), 2), round(48 + 20 * np.sin(a), 2)] for a in angles]


@pytest.mark.parametrize(
    "protect, form, words",
    [
        ([{"mask": "/etc/passwd", "label": "x"}], {}, "protect[0]: a mask file cannot be given"),
        ([{"box": [10, 10, 20, 20], "mask": "m.png"}], {}, "mask file"),
        ([{"box": [1, 1, 2, 2]}] * 65, {}, "at most 64 protected regions (got 65)"),
        ([{"polygon": polygon(1001)}], {}, "at most 1000 points"),
        ([{"box": [30, 10, 20, 40]}], {}, "protect[0]: box [30, 10, 20, 40] must be [x0, y0, x1, y1] with x1 > x0"),
        ([{"box": [1, 2, 3]}], {}, "protect[0].box"),
        ([{"box": [0, 0, 500, 20]}], {}, "protect[0].box: lies outside the 96×96 image"),
        ([{"box": FACE}, {"polygon": [[0, 0], [-5, 10], [10, 10]]}], {}, "protect[1].polygon: lies outside"),
        ('[{"box": [0, 0, NaN, 20]}]', {}, "protect[0].box[2]: Input should be a finite number"),
        ([{"box": FACE, "polygon": TATTOO}], {}, "exactly one of box or polygon"),
        ([{"label": "face"}], {}, "exactly one of box or polygon (got none)"),
        ([{"box": FACE, "label": ""}], {}, "protect[0].label"),
        ([{"box": FACE, "colour": "red"}], {}, "protect[0].colour"),
        ('{"box": [0, 0, 10, 10]}', {}, "protect: give a JSON list"),
        ("[{'box': [0, 0, 10, 10]}]", {}, "protect: not JSON"),
        (None, {"protect_faces": "perhaps"}, "protect_faces"),
    ],
)
def test_bad_protection_is_refused_in_the_request(svc, photo, protect, form, words):
    before = originals(svc)
    variant = photo.copy()
    variant[0, 0] = (7, 7, 7)  # bytes never stored before
    assert words in error_of(submit(svc, variant, protect, **form), 422)
    assert originals(svc) == before  # refused before anything is stored or queued


def test_the_largest_allowed_protection_is_accepted(svc, photo):
    variant = photo.copy()
    variant[0, 1] = (8, 8, 8)
    regions = [{"polygon": polygon(1000), "label": "ring"}] + [{"box": [i, i, i + 2, i + 2], "label": f"b{i}"} for i in range(63)]
    response = submit(svc, variant, regions)
    assert response.status_code == 202, response.text
    assert len(status(svc, response.json()["id"])["protect"]) == 64


def reviewer_protect(svc, scan_id: str, key: str = "reviewer", **body):
    payload = {"region": {"box": BESIDE, "label": "birthmark"}, "reason": "keep the birthmark for the case file", **body}
    return svc["client"].post(f"/v1/scans/{scan_id}/protect", json=payload, headers=h(svc, key))


def test_a_reviewer_adds_a_region_and_the_scan_is_re_run(svc, protected_scan):
    client = svc["client"]
    before = status(svc, protected_scan)
    first = obfuscated(svc, protected_scan)
    beside = box_pixels(BESIDE)
    assert not np.array_equal(first[beside], svc["unsafe"][beside])  # unprotected, the rim reached it

    # roles and tenancy first: nothing changes
    assert "reviewer" in error_of(reviewer_protect(svc, protected_scan, key="submitter"), 403)
    error_of(reviewer_protect(svc, protected_scan, key="other"), 403)
    error_of(reviewer_protect(svc, "0" * 32), 404)
    assert "mask file" in error_of(reviewer_protect(svc, protected_scan, region={"mask": "/etc/passwd"}), 422)
    assert "region.box: lies outside" in error_of(reviewer_protect(svc, protected_scan, region={"box": [90, 0, 97, 5]}), 422)
    error_of(reviewer_protect(svc, protected_scan, reason="  "), 422)
    assert "result version 1, not 3" in error_of(reviewer_protect(svc, protected_scan, version=3), 409)
    assert status(svc, protected_scan)["result_version"] == 1

    response = reviewer_protect(svc, protected_scan, version=1)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and body["result_version"] == 2
    assert body["reviewer_protect"] == [{"box": BESIDE, "label": "birthmark"}]
    queued = status(svc, protected_scan)
    assert queued["status"] == "queued" and queued["result"] is None
    assert "queued" in error_of(reviewer_protect(svc, protected_scan), 409)  # one re-run at a time
    error_of(client.get(f"/v1/scans/{protected_scan}/views/obfuscated", headers=h(svc, "submitter")), 409)

    svc["worker"].drain()
    after = status(svc, protected_scan)
    assert after["status"] == "done" and after["result_version"] == 2 and after["verdict"] == "unsafe"
    listed = {r["label"]: r for r in after["result"]["protected"]}
    assert listed["birthmark"]["source"] == "reviewer" and listed["birthmark"]["box"] == BESIDE
    assert listed["birthmark"]["kept"] == 1.0
    assert listed["face"]["source"] == "user" and listed["tattoo"]["source"] == "user"
    second = obfuscated(svc, protected_scan)
    assert np.array_equal(second[beside], svc["unsafe"][beside])  # now bit-identical
    assert not (second[RED] == (255, 0, 0)).all(axis=-1).any()

    history = client.get(f"/v1/scans/{protected_scan}/results", headers=h(svc, "submitter")).json()["items"]
    assert [(i["version"], i["status"]) for i in history] == [(1, "superseded"), (2, "done")]
    assert history[0]["result"] == before["result"]  # the old result is kept as it was
    assert "birthmark" not in {r["label"] for r in history[0]["result"]["protected"]}

    log = client.get("/v1/audit", params={"action": "protect_region", "scan_id": protected_scan}, headers=h(svc, "admin")).json()["items"]
    assert len(log) == 1 and log[0]["role"] == "reviewer" and svc["keys"]["reviewer"].startswith(log[0]["key"])
    assert log[0]["reason"].startswith("keep the birthmark for the case file") and '"box":[48,8,56,36]' in log[0]["reason"]

    # another tenant sees none of it
    for path in ("", "/results", "/views/evidence"):
        error_of(client.get(f"/v1/scans/{protected_scan}{path}", headers=h(svc, "other")), 404)


def test_only_flagged_done_scans_take_a_reviewer_region(svc):
    safe = submit(svc, svc["safe"]).json()["id"]
    assert "queued" in error_of(reviewer_protect(svc, safe), 409)
    svc["worker"].drain()
    assert "nothing is obfuscated" in error_of(reviewer_protect(svc, safe), 409)


def test_deleting_a_scan_removes_its_result_history(svc, photo):
    variant = svc["unsafe"].copy()
    variant[95, 0] = (3, 3, 3)
    scan_id = submit(svc, variant).json()["id"]
    svc["worker"].drain()
    assert reviewer_protect(svc, scan_id).status_code == 202
    svc["worker"].drain()
    assert svc["client"].delete(f"/v1/scans/{scan_id}", params={"reason": "test cleanup"}, headers=h(svc, "admin")).json()["deleted"]
    from sqlalchemy import func, select

    from safeview.service.db import ScanVersion

    with svc["app"].state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ScanVersion).where(ScanVersion.scan_id == scan_id)) == 0


def test_stored_mask_paths_never_reach_the_library(svc, tmp_path):
    """Defence in depth: even a row edited to name a mask file fails the job, without reading it."""
    from sqlalchemy import update

    from safeview.service.db import Scan

    variant = svc["unsafe"].copy()
    variant[0, 95] = (4, 4, 4)
    scan_id = submit(svc, variant).json()["id"]
    secret = tmp_path / "secret.png"
    with svc["app"].state.sessions() as session:
        session.execute(update(Scan).where(Scan.id == scan_id).values(protect_json=json.dumps([{"mask": str(secret)}])))
        session.commit()
    svc["worker"].drain()
    body = status(svc, scan_id)
    assert body["status"] == "failed" and "mask file" in body["error"] and body["attempts"] == 1


def test_region_counts_are_bounded_by_mask_memory_and_per_scan(svc, photo, protected_scan, monkeypatch):
    """Each region is a full-size mask in the worker, so the count allowed shrinks as images grow;
    and a reviewer cannot push a scan past the most regions a scan may have."""
    import safeview.service.routes.scans as scans_routes
    from safeview.service import protection

    monkeypatch.setattr(protection, "MAX_MASK_PIXELS", 2 * 96 * 96)  # two masks of this image
    variant = photo.copy()
    variant[1, 1] = (5, 5, 5)
    three = [{"box": [0, 0, 10, 10]}, {"box": [10, 10, 20, 20]}, {"box": [20, 20, 30, 30]}]
    assert "at most 2 protected regions on a 96×96 image" in error_of(submit(svc, variant, three), 422)
    monkeypatch.undo()
    body = status(svc, protected_scan)
    count = len(body["protect"]) + len(body["reviewer_protect"])
    assert body["status"] == "done" and count >= 2
    monkeypatch.setattr(scans_routes, "MAX_REGIONS", count)
    assert f"already has {count} protected regions" in error_of(reviewer_protect(svc, protected_scan), 422)
    assert status(svc, protected_scan)["status"] == "done"  # refused: not re-queued


def test_openapi_lists_the_protection_routes(svc):
    paths = svc["client"].get("/openapi.json").json()["paths"]
    assert "/v1/scans/{scan_id}/protect" in paths and "/v1/scans/{scan_id}/results" in paths
    fields = svc["client"].get("/openapi.json").json()["components"]["schemas"]
    submit_form = next(v for k, v in fields.items() if k.startswith("Body_submit"))
    assert {"file", "protect", "protect_faces"} <= set(submit_form["properties"])
