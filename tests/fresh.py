"""Running a check in a fresh interpreter: what a process imports or caches on its own start."""

from __future__ import annotations

import os
import subprocess
import sys


def run_fresh(code: str, **env: str) -> str:
    """Run ``code`` in a new Python process (this environment, plus ``env``) and return its
    stdout; a failure shows the end of its stderr."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
