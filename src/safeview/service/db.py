"""The service's database (SQLAlchemy 2): API keys, scans (which are also the persisted work
queue) and the audit log. SQLite by default, PostgreSQL the same; the schema is created and
upgraded by the Alembic migrations in ``migrations/``. A SQLite file and its folder are created
owner-only (0600, 0700): the database names every uploader and every reviewer's note."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

ROLES = ("submitter", "reviewer", "admin")
STATUSES = ("queued", "running", "done", "failed")
DECISIONS = ("approve", "remove", "escalate")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC, the same on SQLite and PostgreSQL


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; ``prefix`` (its first characters) names it in logs.
    A key stops working when it is revoked or once ``expires_at`` has passed."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Scan(Base):
    """One uploaded image, its job state and, once done, its result and the reviewer's decision.
    Deduplication is per submitting key (``submitted_by``, ``sha256``), so the same bytes from two
    tenants are two scans and neither learns of the other's. ``decision_version`` counts the
    decisions made; a new one must name the version it replaces (optimistic concurrency).

    Protection: ``protect_json`` holds the submitter's protected regions (box/polygon specs, JSON),
    ``protect_faces`` whether the face detector protects faces in this scan (None: the service's
    default, on rows older than the field), and ``protect_key`` a digest of both ("" for a scan
    without protection), which deduplication includes: the same image with other protection is
    another scan. ``reviewer_protect_json`` holds the regions reviewers added since; each addition
    re-queues the scan as result version ``result_version`` + 1, the superseded result kept in
    ``scan_versions``."""

    __tablename__ = "scans"
    __table_args__ = (UniqueConstraint("submitted_by", "sha256", "protect_key", name="uq_scans_submitted_by_sha256_protect"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    submitted_by: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    flagged: Mapped[str] = mapped_column(String(255), default="")  # ",cat1,cat2," for LIKE filters
    max_unsafe: Mapped[float | None] = mapped_column(Float, nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    decision_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    protect_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    protect_faces: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    protect_key: Mapped[str] = mapped_column(String(64), default="", server_default="")
    reviewer_protect_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class ScanVersion(Base):
    """A superseded result of a scan: version ``version`` as it was when a reviewer's added
    protected region re-queued the scan (who did it and why is in the audit log)."""

    __tablename__ = "scan_versions"
    __table_args__ = (UniqueConstraint("scan_id", "version", name="uq_scan_versions_scan_id_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    superseded_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)


class AuditEvent(Base):
    """Who did what to which scan, when and why (reveals of originals, decisions, deletions)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32), index=True)
    scan_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")


def _owner_only_sqlite_file(path: Path) -> None:
    """Create the SQLite file (and its folder) owner-only before SQLite does; its ``-wal`` and
    ``-shm`` files inherit the file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)


def make_engine(url: str, *, pool_size: int = 5, pool_timeout: float = 30.0) -> Engine:
    """An engine for ``url`` with a pool of ``pool_size`` connections (plus a few overflow) that
    waits at most ``pool_timeout`` seconds for one; SQLite gets an owner-only file, a busy timeout
    and WAL, so the server and its worker processes can share the file."""
    pool = {"pool_size": pool_size, "max_overflow": max(2, pool_size // 4), "pool_timeout": pool_timeout}
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        _owner_only_sqlite_file(Path(url.removeprefix("sqlite:///")).expanduser())
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creates it on an empty database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_database(url: str, **pool) -> tuple[Engine, sessionmaker]:
    """Engine and session factory of a migrated database (``pool``: see :func:`make_engine`)."""
    engine = make_engine(url, **pool)
    migrate(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)
