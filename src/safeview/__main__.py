"""``python -m safeview``: the same command line as ``safeview``."""

from .cli import app

app(prog_name="safeview")
