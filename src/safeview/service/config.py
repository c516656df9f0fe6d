"""Settings of one moderation service: where its database and files live, which models its workers
load, and the limits every upload, every job and every key is held to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..images import MAX_ASPECT, MAX_BYTES, MAX_DECODED_BYTES, MAX_PIXELS

DEFAULT_DB = "sqlite:///safeview-service/safeview.db"
DEFAULT_STORAGE = Path("safeview-service/storage")


@dataclass
class ServiceConfig:
    """``models`` is a ``--models`` spec (``demo``, ``default``, checkpoint paths) or, in-process
    only, a callable returning a list of classifiers; ``scan`` the workers' :class:`ScanConfig`
    (or its settings), the same configuration ``safeview scan`` builds.

    Uploads: at most ``max_bytes`` (enforced while the body streams), ``max_pixels``,
    ``max_aspect`` (long side / short side) and ``max_decoded_bytes`` once decoded, all checked
    from the header before anything is stored. Keys: ``rate_limit`` requests per ``rate_window``
    seconds each. Jobs: tried at most ``max_attempts`` times; a worker holds a claimed job under a
    lease of ``lease_s`` seconds that it renews every third of it (so only a lost worker's job is
    taken over); a job running over ``job_timeout_s`` seconds, or a worker needing more than
    ``job_memory_mb`` MiB of address space (0: no limit), fails at once with that reason.
    ``workers`` worker processes are started and stopped with the app; on shutdown they get
    ``shutdown_grace_s`` seconds to finish the job in hand before they are killed and their jobs
    handed back to the queue. The database pool holds ``pool_size`` connections (sized for the
    request threadpool); a request that waits ``pool_timeout_s`` for one gets 503 and Retry-After."""

    db_url: str = DEFAULT_DB
    storage: Path = DEFAULT_STORAGE
    models: str | Callable[[], list[Any]] = "default"
    scan: Any = field(default_factory=dict)  # a ScanConfig, or its settings as a dict (validated here)
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    max_aspect: float = MAX_ASPECT
    max_decoded_bytes: int = MAX_DECODED_BYTES
    rate_limit: int = 600
    rate_window: float = 60.0
    max_attempts: int = 3
    lease_s: float = 300.0
    poll_s: float = 0.5
    job_timeout_s: float = 600.0
    job_memory_mb: int = 4096
    workers: int = 0
    shutdown_grace_s: float = 30.0
    pool_size: int = 48
    pool_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        from ..config import ScanConfig

        self.storage = Path(self.storage)
        if not isinstance(self.scan, ScanConfig):  # bad scan settings fail when the service starts
            self.scan = ScanConfig.build(**{**self.scan, **({"models": self.models} if isinstance(self.models, str) else {})})
        if not 0 < self.max_bytes <= MAX_BYTES or not 0 < self.max_pixels <= MAX_PIXELS:
            raise ValueError(f"limits must be positive and at most {MAX_BYTES} bytes and {MAX_PIXELS} pixels")
        if not 1 <= self.max_aspect or not 0 < self.max_decoded_bytes:
            raise ValueError("max_aspect must be at least 1 and max_decoded_bytes positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.job_timeout_s <= 0 or self.job_memory_mb < 0 or self.workers < 0 or self.shutdown_grace_s < 0:
            raise ValueError("job_timeout_s must be positive; job_memory_mb, workers and shutdown_grace_s at least 0")
        if self.pool_size < 1 or self.pool_timeout_s <= 0:
            raise ValueError("pool_size must be at least 1 and pool_timeout_s positive")
