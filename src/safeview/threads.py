"""Per-process CPU thread caps for torch and numba (BASS's parallel E-sweeps).

Both libraries default to one thread per core; with several worker processes on one machine that
oversubscribes the cores, which slows torch 10–70× here. Workers call :func:`set_threads` once.
"""

from __future__ import annotations


def set_threads(n: int) -> None:
    """Use at most ``n`` threads for torch and for numba's parallel kernels in this process."""
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
