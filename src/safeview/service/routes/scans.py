"""``/v1/scans``: submit an image (with its protected regions), read its status, result, result
history and views, reveal its original (reviewers, with a reason, audited — refused and failed
attempts too), protect a region and re-run it (reviewers, audited), decide it (with the version
being replaced) and delete it (admins). Submitters see only their own scans."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ...errors import ImageError
from ...images import probe_image
from ..db import DECISIONS, AuditEvent, Scan, ScanVersion, utcnow
from ..deps import DB, SCAN_ID, Admin, ApiError, Reason, Reviewer, Submitter, audit, get_scan, real_text
from ..protection import MAX_REGIONS, ProtectionError, check_budget, check_inside, dumps, oriented_size, parse_field, parse_region, protect_key
from ..storage import StorageError

router = APIRouter(prefix="/v1/scans")
_VIEW = re.compile(r"blurred|obfuscated|evidence|(heatmap|regions)-\d{1,3}")
_MEDIA = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp", "TIFF": "image/tiff"}


class Decision(BaseModel):
    action: Literal["approve", "remove", "escalate"]
    note: str = Field("", max_length=2000)
    version: int = Field(ge=0, description="The scan's `decision_version` as you read it (0 when undecided); 409 if another decision came first.")


class ReviewerRegion(BaseModel):
    """A protected region a reviewer adds: ``region`` is ``{"box": [x0, y0, x1, y1]}`` or
    ``{"polygon": [[x, y], …]}`` with a ``label``, in pixels of the image as decoded."""

    region: dict[str, Any] = Field(description='{"box": [x0, y0, x1, y1], "label": "face"} or {"polygon": [[x, y], ...], "label": ...}; no mask files')
    reason: Annotated[str, Field(min_length=3, max_length=500, description="Why (recorded in the audit log)."), AfterValidator(real_text)]
    version: int | None = Field(None, ge=1, description="The scan's `result_version` as you read it; 409 if it changed meanwhile.")


def _regions(text: str | None) -> list[dict]:
    return json.loads(text) if text else []


def summary(scan: Scan) -> dict:
    """A scan as the API shows it (without its result JSON)."""
    return {
        "id": scan.id,
        "status": scan.status,
        "sha256": scan.sha256,
        "width": scan.width,
        "height": scan.height,
        "attempts": scan.attempts,
        "error": scan.error,
        "verdict": scan.verdict,
        "flagged": [c for c in scan.flagged.split(",") if c],
        "max_unsafe_probability": scan.max_unsafe,
        "decision": scan.decision,
        "decision_note": scan.decision_note,
        "decision_version": scan.decision_version,
        "protect": _regions(scan.protect_json),
        "protect_faces": scan.protect_faces,
        "reviewer_protect": _regions(scan.reviewer_protect_json),
        "result_version": scan.result_version,
        "created_at": scan.created_at.isoformat() + "Z",
        "finished_at": scan.finished_at.isoformat() + "Z" if scan.finished_at else None,
    }


@router.post("", status_code=202, tags=["scans"])
def submit(
    request: Request,
    who: Submitter,
    session: DB,
    file: Annotated[UploadFile, File(description="The image (JPEG, PNG, GIF, WebP, BMP, TIFF).")],
    protect: Annotated[str | None, Form(description=(
        'Protected regions, kept visible unless the content cannot be hidden otherwise: a JSON list of {"box": [x0, y0, x1, y1], '
        '"label": "face"} or {"polygon": [[x, y], ...], "label": ...} in pixels of the image as decoded (ends exclusive); '
        f"at most {MAX_REGIONS} regions, polygons of at most 1000 points; mask files are refused."))] = None,
    protect_faces: Annotated[bool | None, Form(description="Protect the faces the built-in detector finds (default: the service's setting).")] = None,
) -> dict:
    """Queue an image for scanning. Idempotent per key and protection: the same bytes with the same
    protection from the same key return the same scan id; other protection is another scan. Only
    the header is checked here (limits on bytes, pixels, aspect ratio, decoded size; protected
    regions inside the image); decoding happens in a worker. Runs in the threadpool, off the event loop."""
    config, storage = request.app.state.config, request.app.state.storage
    try:
        regions = parse_field(protect)
    except ProtectionError as exc:
        raise ApiError(422, str(exc)) from None
    data = file.file.read(config.max_bytes + 1)
    if len(data) > config.max_bytes:
        raise ApiError(413, f"upload exceeds the {config.max_bytes} byte limit")
    try:
        header = probe_image(data, max_pixels=config.max_pixels, max_bytes=config.max_bytes, max_aspect=config.max_aspect, max_decoded_bytes=config.max_decoded_bytes)
    except ImageError as exc:
        raise ApiError(422, str(exc).replace("<bytes>", "upload", 1)) from None
    try:
        size = oriented_size(data, header.width, header.height)
        check_inside(regions, *size)
        check_budget(len(regions), *size)
    except ProtectionError as exc:
        raise ApiError(422, str(exc)) from None
    specs = [r.canonical() for r in regions]
    faces = config.scan.protect_faces if protect_faces is None else protect_faces
    key = protect_key(specs, faces)
    mine = select(Scan).where(Scan.sha256 == header.sha256, Scan.submitted_by == who.key_id, Scan.protect_key == key)
    existing = session.scalar(mine)
    if existing is None:
        storage.put_original(data)
        scan = Scan(
            sha256=header.sha256, width=header.width, height=header.height, submitted_by=who.key_id,
            protect_json=dumps(specs) if specs else None, protect_faces=faces, protect_key=key,
        )
        session.add(scan)
        try:
            session.commit()
            return {"id": scan.id, "status": scan.status, "sha256": scan.sha256, "duplicate": False}
        except IntegrityError:  # the same key submitted the same image concurrently
            session.rollback()
            existing = session.scalar(mine)
    return {"id": existing.id, "status": existing.status, "sha256": existing.sha256, "duplicate": True}


@router.get("/{scan_id}", tags=["scans"])
def scan_status(scan_id: str, who: Submitter, session: DB) -> dict:
    """Status (queued, running, done, failed) and, once done, the ScanResult JSON."""
    scan = get_scan(session, scan_id, who)
    return {**summary(scan), "result": json.loads(scan.result_json) if scan.result_json else None}


@router.get("/{scan_id}/views/{view}", tags=["scans"], responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
def scan_view(request: Request, scan_id: str, view: str, who: Submitter, session: DB) -> Response:
    """A view that reveals nothing: ``obfuscated`` (full size, flagged images only), ``blurred``
    (thumbnail), ``heatmap-N`` / ``regions-N`` (the N-th counterfactual, over the blurred thumbnail),
    ``evidence`` (outlines of the protected regions and detected attributes over the blurred
    thumbnail, when there are any)."""
    scan = get_scan(session, scan_id, who)
    if not _VIEW.fullmatch(view):
        raise ApiError(404, f"unknown view {view!r}; use obfuscated, blurred, evidence, heatmap-N or regions-N")
    if scan.status != "done":
        raise ApiError(409, f"scan {scan_id} is {scan.status}; views exist once it is done")
    kind = f"{view}.png" if view == "obfuscated" else f"{view}.jpg"
    data = request.app.state.storage.read_output(scan.id, kind)
    if data is None:
        hint = "; nothing was obfuscated, use the blurred view" if view == "obfuscated" else ""
        raise ApiError(404, f"scan {scan_id} has no {view} view{hint}")
    return Response(data, media_type="image/png" if kind.endswith(".png") else "image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.get("/{scan_id}/original", tags=["review"])
def original(request: Request, scan_id: str, who: Submitter, session: DB, reason: Reason) -> Response:
    """The original bytes (sha256-verified), reviewers only. Every attempt is audited: a reveal as
    ``reveal_original``, a caller without the role as ``reveal_denied``, an original that fails its
    integrity check as ``reveal_failed``."""
    if not who.can("reviewer"):
        audit(session, who, "reveal_denied", scan_id if SCAN_ID.fullmatch(scan_id) else None, reason)
        session.commit()
        raise ApiError(403, f"this needs the reviewer role; your key has the {who.role} role")
    scan = get_scan(session, scan_id, who)
    try:
        data = request.app.state.storage.read_original(scan.sha256)
    except StorageError as exc:
        audit(session, who, "reveal_failed", scan.id, f"{reason} [{exc}]")
        session.commit()
        raise ApiError(500, str(exc)) from None
    audit(session, who, "reveal_original", scan.id, reason)
    session.commit()
    fmt = json.loads(scan.result_json)["input"]["format"] if scan.result_json else None
    return Response(data, media_type=_MEDIA.get(fmt or "", "application/octet-stream"), headers={"Cache-Control": "private, no-store"})


@router.get("/{scan_id}/results", tags=["scans"])
def result_history(scan_id: str, who: Submitter, session: DB) -> dict:
    """Every result of the scan, oldest first: the superseded versions (a reviewer's protected
    region re-ran it), then the current one (``result`` None while it is queued or running)."""
    scan = get_scan(session, scan_id, who)
    rows = session.scalars(select(ScanVersion).where(ScanVersion.scan_id == scan.id).order_by(ScanVersion.version)).all()
    items = [
        {"version": v.version, "status": "superseded", "verdict": v.verdict, "finished_at": v.finished_at.isoformat() + "Z" if v.finished_at else None,
         "superseded_at": v.superseded_at.isoformat() + "Z", "result": json.loads(v.result_json) if v.result_json else None}
        for v in rows
    ]
    items.append({"version": scan.result_version, "status": scan.status, "verdict": scan.verdict,
                  "finished_at": scan.finished_at.isoformat() + "Z" if scan.finished_at else None, "superseded_at": None,
                  "result": json.loads(scan.result_json) if scan.result_json else None})
    return {"id": scan.id, "items": items}


@router.post("/{scan_id}/protect", status_code=202, tags=["review"])
def add_protection(scan_id: str, body: ReviewerRegion, who: Reviewer, session: DB) -> dict:
    """Protect one more region of a flagged scan (source ``reviewer``) and re-run its obfuscation:
    the scan goes back to the queue as result version N + 1, version N is kept in
    ``/v1/scans/{id}/results``, and the addition is audited (``protect_region``: who, when, the
    region, the reason). Only a done, unsafe scan can be re-run; ``version`` (optional) must be its
    current ``result_version``."""
    scan = get_scan(session, scan_id, who)
    if scan.status != "done":
        raise ApiError(409, f"scan {scan_id} is {scan.status}; regions can be added once it is done")
    if scan.verdict != "unsafe" or not scan.result_json:
        raise ApiError(409, f"scan {scan_id} is {scan.verdict}: nothing is obfuscated, so there is nothing to protect a region from")
    if body.version is not None and body.version != scan.result_version:
        raise ApiError(409, f"scan {scan_id} is at result version {scan.result_version}, not {body.version}; reload it")
    result = json.loads(scan.result_json)
    user, reviewer = _regions(scan.protect_json), _regions(scan.reviewer_protect_json)
    try:
        region = parse_region(body.region)
        check_inside([region], result["input"]["width"], result["input"]["height"], field="region", start=0)
    except ProtectionError as exc:
        raise ApiError(422, str(exc).replace("region[0]", "region", 1)) from None
    if len(user) + len(reviewer) >= MAX_REGIONS:
        raise ApiError(422, f"region: scan {scan_id} already has {len(user) + len(reviewer)} protected regions, the most a scan may have is {MAX_REGIONS}")
    try:
        check_budget(len(user) + len(reviewer) + 1, result["input"]["width"], result["input"]["height"], field="region")
    except ProtectionError as exc:
        raise ApiError(422, str(exc)) from None
    spec = region.canonical()
    version = scan.result_version
    changed = session.execute(
        update(Scan)
        .where(Scan.id == scan.id, Scan.status == "done", Scan.result_version == version)
        .values(
            status="queued", result_version=version + 1, reviewer_protect_json=dumps([*reviewer, spec]), result_json=None,
            error=None, attempts=0, worker=None, lease_until=None, started_at=None, finished_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        session.rollback()
        raise ApiError(409, f"scan {scan_id} changed meanwhile (another region was added or it is being re-run); reload it")
    session.add(ScanVersion(scan_id=scan.id, version=version, result_json=scan.result_json, verdict=scan.verdict,
                            finished_at=scan.finished_at, superseded_by=who.key_id))
    audit(session, who, "protect_region", scan.id, f"{body.reason} [region {dumps([spec])[1:-1]}; result version {version} -> {version + 1}]")
    try:
        session.commit()
    except IntegrityError:  # a concurrent addition archived this version first
        session.rollback()
        raise ApiError(409, f"scan {scan_id} changed meanwhile; reload it") from None
    session.refresh(scan)
    return summary(scan)


@router.post("/{scan_id}/decision", tags=["review"])
def decide(scan_id: str, decision: Decision, who: Reviewer, session: DB) -> dict:
    """Approve, remove or escalate a scanned image, with a note (audit-logged). ``version`` must be
    the ``decision_version`` the reviewer saw: a decision made meanwhile by someone else is a 409,
    never silently overwritten. Every decision stays in the history."""
    scan = get_scan(session, scan_id, who)
    if scan.status != "done":
        raise ApiError(409, f"scan {scan_id} is {scan.status}; only done scans can be decided")
    changed = session.execute(
        update(Scan)
        .where(Scan.id == scan.id, Scan.decision_version == decision.version)
        .values(decision=decision.action, decision_note=decision.note, decided_by=who.key_id, decided_at=utcnow(), decision_version=Scan.decision_version + 1)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        session.rollback()
        session.refresh(scan)
        raise ApiError(409, f"scan {scan_id} was decided meanwhile ({scan.decision}, version {scan.decision_version}, not {decision.version}); reload it and decide again")
    audit(session, who, decision.action, scan.id, decision.note)
    session.commit()
    session.refresh(scan)
    return summary(scan)


@router.get("/{scan_id}/decisions", tags=["review"])
def decision_history(scan_id: str, who: Reviewer, session: DB) -> dict:
    """Every decision made on the scan, oldest first (version N is the N-th)."""
    scan = get_scan(session, scan_id, who)
    rows = session.scalars(select(AuditEvent).where(AuditEvent.scan_id == scan.id, AuditEvent.action.in_(DECISIONS)).order_by(AuditEvent.id)).all()
    items = [{"version": i + 1, "action": e.action, "note": e.reason, "key": e.key_prefix, "role": e.role, "at": e.at.isoformat() + "Z"} for i, e in enumerate(rows)]
    return {"id": scan.id, "items": items}


@router.delete("/{scan_id}", tags=["admin"])
def delete(request: Request, scan_id: str, who: Admin, session: DB, reason: Reason) -> dict:
    """Delete a scan and its views (audit-logged); its original goes once no other scan holds it."""
    scan = get_scan(session, scan_id, who)
    if scan.status == "running":
        raise ApiError(409, f"scan {scan_id} is running; delete it once it has finished")
    audit(session, who, "delete", scan.id, reason)
    session.execute(sql_delete(ScanVersion).where(ScanVersion.scan_id == scan.id))
    session.delete(scan)
    session.commit()
    storage = request.app.state.storage
    storage.delete_outputs(scan_id)
    if not session.scalar(select(func.count()).select_from(Scan).where(Scan.sha256 == scan.sha256)):
        storage.delete_original(scan.sha256)
    return {"id": scan_id, "deleted": True}
