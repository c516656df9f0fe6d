"""``/v1/queue``: the scans waiting for a reviewer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from ..db import Scan
from ..deps import DB, Reviewer
from .scans import summary

router = APIRouter(prefix="/v1/queue", tags=["review"])


@router.get("")
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
    return {"items": [summary(s) for s in rows], "total": total, "limit": limit, "offset": offset}
