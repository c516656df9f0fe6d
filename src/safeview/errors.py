"""Exceptions SafeView raises at its edges, each with a one-line message that names the input and what to do."""


class SafeViewError(Exception):
    """Base class of every error SafeView reports to a user."""


class ImageError(SafeViewError):
    """An input could not be decoded as a safe, bounded RGB image."""


class ModelError(SafeViewError):
    """A classifier or model file could not be loaded or does not match what was asked for."""


#: errors that are a property of the bytes (same file -> same error), so a rerun need not retry them
DETERMINISTIC_ERRORS = ("ImageError",)


def error_record(path: str, exc: BaseException) -> dict[str, str]:
    """A failure as the ``error``/``error_type`` of its record, the one policy of every entry
    point (folder scan, batch, service): SafeView's own one-line message, or the exception named
    for anything else, so one input never stops a run."""
    if isinstance(exc, SafeViewError):
        return {"error": str(exc), "error_type": type(exc).__name__}
    return {"error": f"{path}: scan failed ({type(exc).__name__}: {exc})", "error_type": type(exc).__name__}
