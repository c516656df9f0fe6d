"""FastAPI dependencies of the routes, all read from ``request.app.state`` (set up once by
``create_app``): a database session, the calling principal with its role and rate limit, scan
lookup restricted to what the caller may see, audit records, and a reason that must be real text."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Iterator

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator
from sqlalchemy import select, true
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from .auth import Principal, authenticate
from .db import AuditEvent, Scan

SCAN_ID = re.compile(r"[0-9a-f]{32}")


class ApiError(HTTPException):
    """An error answered as ``{"error": {"status": …, "message": …}}``."""


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


DB = Annotated[Session, Depends(get_db)]
api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from `safeview keys create`.")


def requires(role: str):
    """A dependency giving the caller's :class:`Principal` (401 without a valid key, 429 over the
    key's rate limit, 403 below ``role``). The request guard may have authenticated a request with
    a body already; that principal is reused."""

    def dependency(request: Request, key: Annotated[str | None, Depends(api_key)], session: DB) -> Principal:
        config = request.app.state.config
        principal = request.scope.get("state", {}).get("principal") or authenticate(session, key)
        if principal is None:
            raise ApiError(401, "missing or invalid API key; send it in the X-API-Key header", {"WWW-Authenticate": "APIKey"})
        if not request.app.state.limiter.allow(principal.key_id):
            raise ApiError(429, f"rate limit of {config.rate_limit} requests per {config.rate_window:g} s exceeded", {"Retry-After": str(int(config.rate_window))})
        if not principal.can(role):
            raise ApiError(403, f"this needs the {role} role; your key has the {principal.role} role")
        return principal

    return dependency


Submitter = Annotated[Principal, Depends(requires("submitter"))]
Reviewer = Annotated[Principal, Depends(requires("reviewer"))]
Admin = Annotated[Principal, Depends(requires("admin"))]


def visible_to(who: Principal):
    """The SQL condition of the scans ``who`` may see: all for reviewers and admins, a
    submitter's own only (object-level authorisation)."""
    return true() if who.can("reviewer") else Scan.submitted_by == who.key_id


def get_scan(session: Session, scan_id: str, who: Principal) -> Scan:
    """The scan ``scan_id`` if ``who`` may see it; 404 otherwise, so another tenant's scan ids
    are indistinguishable from unknown ones."""
    scan = session.scalar(select(Scan).where(Scan.id == scan_id, visible_to(who))) if SCAN_ID.fullmatch(scan_id) else None
    if scan is None:
        raise ApiError(404, f"no scan with id {scan_id!r}")
    return scan


def audit(session: Session, who: Principal, action: str, scan_id: str | None, reason: str) -> None:
    """Add an audit record (committed with the caller's transaction)."""
    session.add(AuditEvent(key_id=who.key_id, key_prefix=who.prefix, role=who.role, action=action, scan_id=scan_id, reason=reason))


def real_text(value: str) -> str:
    """``value`` if it holds at least three visible characters: spaces, zero-width and other
    format or control characters do not count (a reason of three spaces explains nothing)."""
    visible = [c for c in value if not unicodedata.category(c).startswith(("Z", "C"))]
    if len(visible) < 3:
        raise ValueError("the reason must contain at least 3 visible characters")
    return value.strip()


Reason = Annotated[str, Query(min_length=3, max_length=500, description="Why (recorded in the audit log)."), AfterValidator(real_text)]
