"""The service itself: ``/health`` (no key), ``/metrics`` (reviewers and admins: it counts every
tenant's scans) and the review UI."""

from __future__ import annotations

import bisect

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy import func, select

from ... import __version__
from ..db import DECISIONS, STATUSES, Scan
from ..deps import DB, Reviewer, Submitter

router = APIRouter()
ui_router = APIRouter(include_in_schema=False)

#: upper bounds (seconds) of the scan latency histogram, submit to done
LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
UI_POLICY = "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'"


@router.get("/health", tags=["service"])
def health(session: DB) -> dict:
    """Liveness and database reachability (no key needed)."""
    session.execute(select(1))
    return {"status": "ok", "version": __version__}


@router.get("/metrics", tags=["service"], response_class=PlainTextResponse)
def metrics(request: Request, who: Reviewer, session: DB) -> PlainTextResponse:
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
    lines += ["# HELP safeview_http_responses_total Responses of this server process by status code.", "# TYPE safeview_http_responses_total counter"]
    lines += [f'safeview_http_responses_total{{code="{code}"}} {n}' for code, n in request.app.state.responses.snapshot()]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


@ui_router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui")  # relative: never built from the Host header


@ui_router.get("/ui", response_class=HTMLResponse)
def review_page(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.ui["review.html"], headers={"Content-Security-Policy": UI_POLICY})


@ui_router.get("/ui/review.js")
def review_js(request: Request) -> Response:
    return Response(request.app.state.ui["review.js"], media_type="text/javascript")


@ui_router.get("/ui/review.css")
def review_css(request: Request) -> Response:
    return Response(request.app.state.ui["review.css"], media_type="text/css")


@router.get("/v1/me", tags=["auth"])
def me(who: Submitter) -> dict:
    """The role of the calling key."""
    return {"role": who.role, "key": who.prefix}
