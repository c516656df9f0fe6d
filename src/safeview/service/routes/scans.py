"""``/v1/scans``: submit an image, read its status, result and views, reveal its original
(reviewers, with a reason, audited — refused and failed attempts too), decide it (with the version
being replaced) and delete it (admins). Submitters see only their own scans."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ...errors import ImageError
from ...images import probe_image
from ..db import DECISIONS, AuditEvent, Scan, utcnow
from ..deps import DB, SCAN_ID, Admin, ApiError, Reason, Reviewer, Submitter, audit, get_scan
from ..storage import StorageError

router = APIRouter(prefix="/v1/scans")
_VIEW = re.compile(r"blurred|obfuscated|(heatmap|regions)-\d{1,3}")
_MEDIA = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp", "TIFF": "image/tiff"}


class Decision(BaseModel):
    action: Literal["approve", "remove", "escalate"]
    note: str = Field("", max_length=2000)
    version: int = Field(ge=0, description="The scan's `decision_version` as you read it (0 when undecided); 409 if another decision came first.")


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
        "created_at": scan.created_at.isoformat() + "Z",
        "finished_at": scan.finished_at.isoformat() + "Z" if scan.finished_at else None,
    }


@router.post("", status_code=202, tags=["scans"])
def submit(request: Request, who: Submitter, session: DB, file: Annotated[UploadFile, File(description="The image (JPEG, PNG, GIF, WebP, BMP, TIFF).")]) -> dict:
    """Queue an image for scanning. Idempotent per key: the same bytes from the same key return the
    same scan id. Only the header is checked here (limits on bytes, pixels, aspect ratio, decoded
    size); decoding happens in a worker. Runs in the threadpool, off the event loop."""
    config, storage = request.app.state.config, request.app.state.storage
    data = file.file.read(config.max_bytes + 1)
    if len(data) > config.max_bytes:
        raise ApiError(413, f"upload exceeds the {config.max_bytes} byte limit")
    try:
        header = probe_image(data, max_pixels=config.max_pixels, max_bytes=config.max_bytes, max_aspect=config.max_aspect, max_decoded_bytes=config.max_decoded_bytes)
    except ImageError as exc:
        raise ApiError(422, str(exc).replace("<bytes>", "upload", 1)) from None
    mine = select(Scan).where(Scan.sha256 == header.sha256, Scan.submitted_by == who.key_id)
    existing = session.scalar(mine)
    if existing is None:
        storage.put_original(data)
        scan = Scan(sha256=header.sha256, width=header.width, height=header.height, submitted_by=who.key_id)
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
    (thumbnail), ``heatmap-N`` / ``regions-N`` (the N-th counterfactual, over the blurred thumbnail)."""
    scan = get_scan(session, scan_id, who)
    if not _VIEW.fullmatch(view):
        raise ApiError(404, f"unknown view {view!r}; use obfuscated, blurred, heatmap-N or regions-N")
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
    session.delete(scan)
    session.commit()
    storage = request.app.state.storage
    storage.delete_outputs(scan_id)
    if not session.scalar(select(func.count()).select_from(Scan).where(Scan.sha256 == scan.sha256)):
        storage.delete_original(scan.sha256)
    return {"id": scan_id, "deleted": True}
