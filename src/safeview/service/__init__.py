"""SafeView as a moderation service: ``safeview serve`` runs a FastAPI app (API keys and roles,
a persisted work queue drained by worker processes, content-addressed evidence storage, an
audit log) and the review UI, where images are obfuscated by default (paper, Sec. 1: moderators
should see as little unsafe content as possible)."""

from .config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]


def __getattr__(name: str):
    if name == "create_app":  # FastAPI is imported only when the app is built
        from .app import create_app

        return create_app
    raise AttributeError(name)
