"""The moderation API (FastAPI, versioned under ``/v1``, OpenAPI schema at ``/openapi.json``) and
the review UI.

Uploads are checked from the header and queued; workers decode and scan them. Reviewers see
obfuscated or blurred views by default; an original is only served on an explicit request with a
reason, and every such reveal (and every refused or failed one), decision and deletion goes to the
audit log — the paper's aim of showing moderators as little unsafe content as possible, with the
safe context kept for investigation. Submitters see only their own scans.

``create_app`` only wires things together: the routes live in ``routes/`` (one ``APIRouter`` per
resource) and read what they need from ``app.state`` through ``deps``; the request guard of
``middleware`` authenticates and bounds bodies before any route runs. There is no Swagger UI: it
would load its assets from a CDN, so only the schema is served.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from .. import __version__
from .auth import RateLimiter
from .config import ServiceConfig
from .db import open_database
from .middleware import RETRY_AFTER_S, RequestGuard, ResponseCounter, error_response
from .routes import admin, review, scans, service
from .storage import Storage


def _ui_file(name: str) -> str:
    return resources.files("safeview.service").joinpath("ui", name).read_text(encoding="utf-8")


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Start ``config.workers`` worker processes with the app and stop them with it: on shutdown
    (SIGTERM or SIGINT to ``safeview serve``) they stop taking jobs, get ``shutdown_grace_s`` to
    finish the one in hand, and are then killed with their jobs handed back to the queue."""
    config = app.state.config
    pool = None
    if config.workers:
        from .worker import WorkerPool

        pool = WorkerPool(config, app.state.sessions, config.workers)
        await anyio.to_thread.run_sync(pool.start)
    app.state.pool = pool
    try:
        yield
    finally:
        if pool is not None:
            await anyio.to_thread.run_sync(pool.stop, config.shutdown_grace_s)


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """The FastAPI application of ``config`` (the database is migrated on creation)."""
    config = config or ServiceConfig()
    engine, sessions = open_database(config.db_url, pool_size=config.pool_size, pool_timeout=config.pool_timeout_s)
    app = FastAPI(
        title="SafeView moderation service",
        version=__version__,
        description="Submit images, get SafeView scan results (verdicts, minimal obfuscation, rationale), review them.",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,  # a slash redirect would be built from the Host header
        lifespan=_lifespan,
    )
    state = app.state
    state.config, state.engine, state.sessions, state.storage = config, engine, sessions, Storage(config.storage)
    state.limiter = RateLimiter(config.rate_limit, config.rate_window)
    state.responses = ResponseCounter()
    state.ui = {name: _ui_file(name) for name in ("review.html", "review.js", "review.css")}
    state.pool = None

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, message)

    @app.exception_handler(PoolTimeout)
    async def _saturated(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        return error_response(503, "the service is saturated (no database connection free); retry shortly", {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(OperationalError)
    async def _database_busy(request: Request, exc: OperationalError) -> JSONResponse:
        if "locked" not in str(exc.orig) and "busy" not in str(exc.orig):
            raise exc
        return error_response(503, "the database is busy; retry shortly", {"Retry-After": str(RETRY_AFTER_S)})

    for router in (scans.router, review.router, admin.audit_router, admin.keys_router, service.router, service.ui_router):
        app.include_router(router)
    app.add_middleware(RequestGuard, app_state=state)
    return app
