"""The moderation API (FastAPI, versioned under ``/v1``, OpenAPI at ``/docs``) and the review UI.

Uploads are decoded and checked before anything is stored, then queued; workers do the scanning.
Reviewers see obfuscated or blurred views by default; an original is only served on an explicit
request with a reason, and every such reveal, decision and deletion goes to the audit log — the
paper's aim of showing moderators as little unsafe content as possible, with the safe context
kept for investigation.
"""

import bisect
import json
import re
import threading
from collections import Counter
from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import ImageError
from ..images import load_image_info
from .auth import Principal, RateLimiter, authenticate
from .config import ServiceConfig
from .db import DECISIONS, STATUSES, AuditEvent, Scan, open_database, utcnow
from .storage import Storage, StorageError

#: upper bounds (seconds) of the scan latency histogram, submit to done
LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_VIEW = re.compile(r"blurred|obfuscated|(heatmap|regions)-\d{1,3}")
_MEDIA = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp", "TIFF": "image/tiff"}


class ApiError(HTTPException):
    """An error answered as ``{"error": {"status": …, "message": …}}``."""


class Decision(BaseModel):
    action: Literal["approve", "remove", "escalate"]
    note: str = Field("", max_length=2000)


def _summary(scan: Scan) -> dict:
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
        "created_at": scan.created_at.isoformat() + "Z",
        "finished_at": scan.finished_at.isoformat() + "Z" if scan.finished_at else None,
    }


def _ui_file(name: str) -> str:
    return resources.files("safeview.service").joinpath("ui", name).read_text(encoding="utf-8")


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """The FastAPI application of ``config`` (the database is migrated on creation)."""
    config = config or ServiceConfig()
    engine, sessions = open_database(config.db_url)
    storage = Storage(config.storage)
    limiter = RateLimiter(config.rate_limit, config.rate_window)
    responses: Counter[int] = Counter()
    responses_lock = threading.Lock()
    ui = {name: _ui_file(name) for name in ("review.html", "review.js", "review.css")}

    app = FastAPI(
        title="SafeView moderation service",
        version=__version__,
        description="Submit images, get SafeView scan results (verdicts, minimal obfuscation, rationale), review them.",
    )
    app.state.config, app.state.engine, app.state.sessions, app.state.storage = config, engine, sessions, storage

    # -- errors: always a JSON body ------------------------------------------------------------
    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": {"status": exc.status_code, "message": exc.detail}}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": {"status": 422, "message": message}}, 422)

    @app.middleware("http")
    async def _guard_and_count(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and int(length) > config.max_bytes + 65536:
            response = JSONResponse(
                {"error": {"status": 413, "message": f"request body exceeds the {config.max_bytes} byte upload limit"}}, 413
            )
        else:
            response = await call_next(request)
        with responses_lock:
            responses[response.status_code] += 1
        return response

    # -- dependencies --------------------------------------------------------------------------
    def db() -> Session:
        with sessions() as session:
            yield session

    api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key from `safeview keys create`.")

    def requires(role: str):
        def dependency(key: Annotated[str | None, Depends(api_key)], session: Annotated[Session, Depends(db)]) -> Principal:
            principal = authenticate(session, key)
            if principal is None:
                raise ApiError(401, "missing or invalid API key; send it in the X-API-Key header", {"WWW-Authenticate": "APIKey"})
            if not limiter.allow(principal.key_id):
                raise ApiError(429, f"rate limit of {config.rate_limit} requests per {config.rate_window:g} s exceeded", {"Retry-After": str(int(config.rate_window))})
            if not principal.can(role):
                raise ApiError(403, f"this needs the {role} role; your key has the {principal.role} role")
            return principal

        return dependency

    Submitter = Annotated[Principal, Depends(requires("submitter"))]
    Reviewer = Annotated[Principal, Depends(requires("reviewer"))]
    Admin = Annotated[Principal, Depends(requires("admin"))]
    DB = Annotated[Session, Depends(db)]

    def get_scan(session: Session, scan_id: str) -> Scan:
        scan = session.get(Scan, scan_id) if re.fullmatch(r"[0-9a-f]{32}", scan_id) else None
        if scan is None:
            raise ApiError(404, f"no scan with id {scan_id!r}")
        return scan

    def audit(session: Session, who: Principal, action: str, scan_id: str | None, reason: str) -> None:
        session.add(AuditEvent(key_id=who.key_id, key_prefix=who.prefix, role=who.role, action=action, scan_id=scan_id, reason=reason))

    # -- public --------------------------------------------------------------------------------
    @app.get("/health", tags=["service"])
    def health(session: DB) -> dict:
        """Liveness and database reachability (no key needed)."""
        session.execute(select(1))
        return {"status": "ok", "version": __version__}

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui")

    @app.get("/ui", include_in_schema=False, response_class=HTMLResponse)
    def review_page() -> HTMLResponse:
        return HTMLResponse(ui["review.html"], headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' blob:"})

    @app.get("/ui/review.js", include_in_schema=False)
    def review_js() -> Response:
        return Response(ui["review.js"], media_type="text/javascript")

    @app.get("/ui/review.css", include_in_schema=False)
    def review_css() -> Response:
        return Response(ui["review.css"], media_type="text/css")

    # -- submitting and reading scans ------------------------------------------------------------
    @app.get("/v1/me", tags=["auth"])
    def me(who: Submitter) -> dict:
        """The role of the calling key."""
        return {"role": who.role, "key": who.prefix}

    @app.post("/v1/scans", status_code=202, tags=["scans"])
    async def submit(who: Submitter, session: DB, file: Annotated[UploadFile, File(description="The image (JPEG, PNG, GIF, WebP, BMP, TIFF).")]) -> dict:
        """Queue an image for scanning. Idempotent: the same bytes return the same scan id."""
        data = await file.read(config.max_bytes + 1)
        if len(data) > config.max_bytes:
            raise ApiError(413, f"upload exceeds the {config.max_bytes} byte limit")
        try:
            loaded = load_image_info(data, max_pixels=config.max_pixels, max_bytes=config.max_bytes)
        except ImageError as exc:
            raise ApiError(422, str(exc).replace("<bytes>", "upload", 1)) from None
        existing = session.scalar(select(Scan).where(Scan.sha256 == loaded.sha256))
        if existing is None:
            storage.put_original(data)
            scan = Scan(sha256=loaded.sha256, width=loaded.width, height=loaded.height, submitted_by=who.key_id)
            session.add(scan)
            try:
                session.commit()
                return {"id": scan.id, "status": scan.status, "sha256": scan.sha256, "duplicate": False}
            except IntegrityError:  # the same image submitted concurrently
                session.rollback()
                existing = session.scalar(select(Scan).where(Scan.sha256 == loaded.sha256))
        return {"id": existing.id, "status": existing.status, "sha256": existing.sha256, "duplicate": True}

    @app.get("/v1/scans/{scan_id}", tags=["scans"])
    def scan_status(scan_id: str, who: Submitter, session: DB) -> dict:
        """Status (queued, running, done, failed) and, once done, the ScanResult JSON."""
        scan = get_scan(session, scan_id)
        return {**_summary(scan), "result": json.loads(scan.result_json) if scan.result_json else None}

    @app.get("/v1/scans/{scan_id}/views/{view}", tags=["scans"], responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    def scan_view(scan_id: str, view: str, who: Submitter, session: DB) -> Response:
        """A view that reveals nothing: ``obfuscated`` (full size, flagged images only), ``blurred``
        (thumbnail), ``heatmap-N`` / ``regions-N`` (the N-th counterfactual, over the blurred thumbnail)."""
        scan = get_scan(session, scan_id)
        if not _VIEW.fullmatch(view):
            raise ApiError(404, f"unknown view {view!r}; use obfuscated, blurred, heatmap-N or regions-N")
        if scan.status != "done":
            raise ApiError(409, f"scan {scan_id} is {scan.status}; views exist once it is done")
        kind = f"{view}.png" if view == "obfuscated" else f"{view}.jpg"
        data = storage.read_output(scan.id, kind)
        if data is None:
            hint = "; nothing was obfuscated, use the blurred view" if view == "obfuscated" else ""
            raise ApiError(404, f"scan {scan_id} has no {view} view{hint}")
        return Response(data, media_type="image/png" if kind.endswith(".png") else "image/jpeg", headers={"Cache-Control": "private, no-store"})

    @app.get("/v1/scans/{scan_id}/original", tags=["review"])
    def original(scan_id: str, who: Reviewer, session: DB, reason: Annotated[str, Query(min_length=3, max_length=500, description="Why the original must be seen (audit log).")]) -> Response:
        """The original bytes (sha256-verified). Every call is recorded in the audit log."""
        scan = get_scan(session, scan_id)
        try:
            data = storage.read_original(scan.sha256)
        except StorageError as exc:
            raise ApiError(500, str(exc)) from None
        audit(session, who, "reveal_original", scan.id, reason)
        session.commit()
        fmt = json.loads(scan.result_json)["input"]["format"] if scan.result_json else None
        return Response(data, media_type=_MEDIA.get(fmt or "", "application/octet-stream"), headers={"Cache-Control": "private, no-store"})

    @app.post("/v1/scans/{scan_id}/decision", tags=["review"])
    def decide(scan_id: str, decision: Decision, who: Reviewer, session: DB) -> dict:
        """Approve, remove or escalate a scanned image, with a note (audit-logged)."""
        scan = get_scan(session, scan_id)
        if scan.status != "done":
            raise ApiError(409, f"scan {scan_id} is {scan.status}; only done scans can be decided")
        scan.decision, scan.decision_note, scan.decided_by, scan.decided_at = decision.action, decision.note, who.key_id, utcnow()
        audit(session, who, decision.action, scan.id, decision.note)
        session.commit()
        return _summary(scan)

    @app.delete("/v1/scans/{scan_id}", tags=["admin"])
    def delete(scan_id: str, who: Admin, session: DB, reason: Annotated[str, Query(min_length=3, max_length=500)]) -> dict:
        """Delete a scan, its original and its views (audit-logged)."""
        scan = get_scan(session, scan_id)
        if scan.status == "running":
            raise ApiError(409, f"scan {scan_id} is running; delete it once it has finished")
        audit(session, who, "delete", scan.id, reason)
        session.delete(scan)
        session.commit()
        storage.delete_outputs(scan_id)
        storage.delete_original(scan.sha256)
        return {"id": scan_id, "deleted": True}

    @app.get("/v1/queue", tags=["review"])
    def review_queue(
        who: Reviewer,
        session: DB,
        status: Literal["queued", "running", "done", "failed"] | None = "done",
        verdict: Literal["safe", "unsafe"] | None = None,
        category: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_\-]{1,64}$")] = None,
        decided: bool | None = False,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict:
        """Scans to review (default: done and undecided), unsafe first, most confident first, then oldest."""
        query = select(Scan)
        if status:
            query = query.where(Scan.status == status)
        if verdict:
            query = query.where(Scan.verdict == verdict)
        if category:
            query = query.where(Scan.flagged.like(f"%,{category},%"))
        if decided is not None:
            query = query.where(Scan.decision.is_not(None) if decided else Scan.decision.is_(None))
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        order = (Scan.verdict == "unsafe").desc(), Scan.max_unsafe.desc(), Scan.created_at, Scan.id
        rows = session.scalars(query.order_by(*order).limit(limit).offset(offset)).all()
        return {"items": [_summary(s) for s in rows], "total": total, "limit": limit, "offset": offset}

    @app.get("/v1/audit", tags=["admin"])
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

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def metrics(who: Submitter, session: DB) -> PlainTextResponse:
        """Prometheus text format: queue depth, scans by status, scan latency histogram, responses."""
        counts = dict(session.execute(select(Scan.status, func.count()).group_by(Scan.status)).all())
        lines = ["# HELP safeview_queue_depth Jobs waiting or running.", "# TYPE safeview_queue_depth gauge"]
        lines += [f'safeview_queue_depth{{status="{s}"}} {counts.get(s, 0)}' for s in ("queued", "running")]
        lines += ["# HELP safeview_scans_total Scans by status (rate() of status=\"done\" gives scans/s).", "# TYPE safeview_scans_total counter"]
        lines += [f'safeview_scans_total{{status="{s}"}} {counts.get(s, 0)}' for s in STATUSES]
        latencies = sorted(
            (finished - created).total_seconds()
            for created, finished in session.execute(select(Scan.created_at, Scan.finished_at).where(Scan.status == "done")).all()
        )
        lines += ["# HELP safeview_scan_latency_seconds Time from submission to a finished scan.", "# TYPE safeview_scan_latency_seconds histogram"]
        lines += [f'safeview_scan_latency_seconds_bucket{{le="{b:g}"}} {bisect.bisect_right(latencies, b)}' for b in LATENCY_BUCKETS]
        lines += [f'safeview_scan_latency_seconds_bucket{{le="+Inf"}} {len(latencies)}', f"safeview_scan_latency_seconds_sum {sum(latencies):.6f}", f"safeview_scan_latency_seconds_count {len(latencies)}"]
        decided = dict(session.execute(select(Scan.decision, func.count()).where(Scan.decision.is_not(None)).group_by(Scan.decision)).all())
        lines += ["# HELP safeview_decisions_total Review decisions.", "# TYPE safeview_decisions_total counter"]
        lines += [f'safeview_decisions_total{{action="{d}"}} {decided.get(d, 0)}' for d in DECISIONS]
        with responses_lock:
            seen = sorted(responses.items())
        lines += ["# HELP safeview_http_responses_total Responses of this server process by status code.", "# TYPE safeview_http_responses_total counter"]
        lines += [f'safeview_http_responses_total{{code="{code}"}} {n}' for code, n in seen]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return app
