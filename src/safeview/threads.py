"""Per-process CPU thread caps for torch, numba (BASS's parallel E-sweeps) and the attribute
detectors' ONNX Runtime sessions.

Each library defaults to one thread per core; with several worker processes on one machine that
oversubscribes the cores, which slows torch 10–70× here. Workers call :func:`set_threads` once,
before any model is built; :func:`thread_limit` tells a detector how many threads it may use.
"""

from __future__ import annotations

import os

_LIMIT: int | None = None


def thread_limit() -> int:
    """The threads this process may use: what :func:`set_threads` set, else one per core."""
    return _LIMIT or os.cpu_count() or 1


def set_threads(n: int) -> None:
    """Use at most ``n`` threads for torch, numba's parallel kernels and detectors built later."""
    import numba
    import torch

    global _LIMIT
    _LIMIT = n
    torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
