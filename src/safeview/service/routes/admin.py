"""Admin resources: ``/v1/audit`` (who did what to which scan, when and why) and ``/v1/keys``
(list, create, revoke, rotate — the same operations as ``safeview keys``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from ..auth import create_key, list_keys, revoke_key, rotate_key
from ..db import AuditEvent
from ..deps import DB, Admin, ApiError, audit

audit_router = APIRouter(prefix="/v1/audit", tags=["admin"])
keys_router = APIRouter(prefix="/v1/keys", tags=["admin"])


class NewKey(BaseModel):
    role: Literal["submitter", "reviewer", "admin"]
    expires_days: float | None = Field(None, gt=0, description="Days until the key stops working (none: until revoked).")


@audit_router.get("")
def audit_log(
    who: Admin,
    session: DB,
    action: str | None = None,
    scan_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    """The audit log, newest first: who did what to which scan, when and why."""
    query = select(AuditEvent)
    if action:
        query = query.where(AuditEvent.action == action)
    if scan_id:
        query = query.where(AuditEvent.scan_id == scan_id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit).offset(offset)).all()
    items = [
        {"id": e.id, "at": e.at.isoformat() + "Z", "key": e.key_prefix, "role": e.role, "action": e.action, "scan_id": e.scan_id, "reason": e.reason}
        for e in rows
    ]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@keys_router.get("")
def keys(who: Admin, session: DB) -> dict:
    """Every key: id, prefix, role, state (active, expired, revoked), dates; never a secret."""
    return {"items": list_keys(session)}


@keys_router.post("", status_code=201)
def new_key(body: NewKey, who: Admin, session: DB) -> dict:
    """Create a key; the secret is in this response only (audit-logged, without the secret)."""
    key = create_key(session, body.role, expires_days=body.expires_days)
    audit(session, who, "key_create", None, f"{body.role} key {key[:10]}")
    session.commit()
    return {"key": key, "prefix": key[:10], "role": body.role}


@keys_router.post("/{key_id}/revoke")
def revoke(key_id: int, who: Admin, session: DB) -> dict:
    """Revoke a key: its next request gets 401 (audit-logged)."""
    try:
        row = revoke_key(session, key_id)
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    audit(session, who, "key_revoke", None, f"key {row.id} ({row.prefix})")
    session.commit()
    return {"id": row.id, "prefix": row.prefix, "revoked": True}


@keys_router.post("/{key_id}/rotate", status_code=201)
def rotate(key_id: int, who: Admin, session: DB) -> dict:
    """Replace a key by a new one of the same role and revoke the old one (audit-logged)."""
    try:
        old, key = rotate_key(session, key_id)
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    audit(session, who, "key_rotate", None, f"key {old.id} ({old.prefix}) -> {key[:10]}")
    session.commit()
    return {"key": key, "prefix": key[:10], "role": old.role, "revoked": old.id}
