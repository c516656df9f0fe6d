"""API keys and roles. A key is 32 random bytes shown once; the database keeps only its SHA-256
(a high-entropy secret needs no slow hash). Roles are ordered: a reviewer can do what a
submitter can, an admin what a reviewer can. Keys can expire, be listed, revoked (401 on the next
request: every request looks the key up) and rotated (a new key of the same role; the old one
revoked)."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .db import ROLES, ApiKey, utcnow

KEY_PREFIX = "sv_"


@dataclass(frozen=True)
class Principal:
    """The caller of a request."""

    key_id: int
    prefix: str
    role: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(session: Session, role: str, *, expires_days: float | None = None) -> str:
    """Create a key with ``role`` (valid for ``expires_days`` days, or until revoked when None);
    returns the secret, which is not stored anywhere."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if expires_days is not None and expires_days <= 0:
        raise ValueError("expiry must be a positive number of days")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(days=expires_days) if expires_days is not None else None
    session.add(ApiKey(prefix=key[:10], key_hash=hash_key(key), role=role, expires_at=expires_at))
    session.commit()
    return key


def authenticate(session: Session, key: str | None) -> Principal | None:
    """The principal of ``key``, or None when it is missing, unknown, revoked or expired."""
    if not key or len(key) > 200:
        return None
    row = session.scalar(
        select(ApiKey).where(
            ApiKey.key_hash == hash_key(key), ApiKey.revoked.is_(False),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utcnow()),
        )
    )
    return Principal(row.id, row.prefix, row.role) if row else None


def list_keys(session: Session) -> list[dict]:
    """Every key (never its secret): id, prefix, role, created, expiry, revocation, state."""
    now = utcnow()

    def state(row: ApiKey) -> str:
        return "revoked" if row.revoked else "expired" if row.expires_at and row.expires_at <= now else "active"

    return [
        {
            "id": row.id, "prefix": row.prefix, "role": row.role, "state": state(row),
            "created_at": row.created_at.isoformat() + "Z",
            "expires_at": row.expires_at.isoformat() + "Z" if row.expires_at else None,
            "revoked_at": row.revoked_at.isoformat() + "Z" if row.revoked_at else None,
        }
        for row in session.scalars(select(ApiKey).order_by(ApiKey.id))
    ]


def find_key(session: Session, ref: str | int) -> ApiKey:
    """The key whose id is ``ref`` or whose prefix ``ref`` begins (at least 4 characters);
    LookupError when none or several match."""
    text = str(ref)
    if text.isdigit():
        row = session.get(ApiKey, int(text))
        rows = [row] if row else []
    elif len(text) >= 4:
        rows = list(session.scalars(select(ApiKey).where(ApiKey.prefix.startswith(text[:10], autoescape=True))))
    else:
        rows = []
    if len(rows) != 1:
        raise LookupError(f"{'no key' if not rows else f'{len(rows)} keys'} match {text!r}; give the id or a longer prefix (see `safeview keys list`)")
    return rows[0]


def revoke_key(session: Session, ref: str | int) -> ApiKey:
    """Revoke a key (by id or prefix) at once; revoking a revoked key changes nothing."""
    row = find_key(session, ref)
    if not row.revoked:
        row.revoked, row.revoked_at = True, utcnow()
        session.commit()
    return row


def rotate_key(session: Session, ref: str | int, *, expires_days: float | None = None) -> tuple[ApiKey, str]:
    """Replace a key: a new key of the same role is created and the old one revoked, in that
    order; returns the old key's row and the new secret."""
    row = find_key(session, ref)
    if row.revoked:
        raise LookupError(f"key {row.id} ({row.prefix}) is already revoked; create a new one instead")
    key = create_key(session, row.role, expires_days=expires_days)
    return revoke_key(session, row.id), key


class RateLimiter:
    """Sliding window: at most ``limit`` requests per ``window`` seconds per key (per process)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._hits: dict[int, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: int) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key_id, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True
