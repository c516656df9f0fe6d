"""Settings of one moderation service: where its database and files live, which models its workers
load, and the limits every upload and every key is held to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

DEFAULT_DB = "sqlite:///safeview-service/safeview.db"
DEFAULT_STORAGE = Path("safeview-service/storage")


@dataclass
class ServiceConfig:
    """``models`` is a ``--models`` spec (``demo``, ``default``, checkpoint paths) or, in-process
    only, a callable returning a list of classifiers. ``rate_limit`` requests per ``rate_window``
    seconds are allowed per key; a job is tried at most ``max_attempts`` times; a worker holds a
    claimed job for ``lease_s`` seconds before another may take it over (crash recovery)."""

    db_url: str = DEFAULT_DB
    storage: Path = DEFAULT_STORAGE
    models: str | Callable[[], list[Any]] = "default"
    safeguard: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of Safeguard
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    rate_limit: int = 600
    rate_window: float = 60.0
    max_attempts: int = 3
    lease_s: float = 300.0
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        from ..images import MAX_BYTES, MAX_PIXELS

        self.storage = Path(self.storage)
        if not 0 < self.max_bytes <= MAX_BYTES or not 0 < self.max_pixels <= MAX_PIXELS:
            raise ValueError(f"limits must be positive and at most {MAX_BYTES} bytes and {MAX_PIXELS} pixels")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
