"""API keys and roles. A key is 32 random bytes shown once; the database keeps only its SHA-256
(a high-entropy secret needs no slow hash). Roles are ordered: a reviewer can do what a
submitter can, an admin what a reviewer can."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import ROLES, ApiKey

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


def create_key(session: Session, role: str) -> str:
    """Create a key with ``role``; returns the secret, which is not stored anywhere."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(prefix=key[:10], key_hash=hash_key(key), role=role))
    session.commit()
    return key


def authenticate(session: Session, key: str | None) -> Principal | None:
    """The principal of ``key``, or None when it is missing, unknown or revoked."""
    if not key or len(key) > 200:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked.is_(False)))
    return Principal(row.id, row.prefix, row.role) if row else None


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
