"""The pure-ASGI guard in front of every route. It runs before FastAPI parses anything, so:

- a request that carries a body to ``/v1`` is authenticated from its headers first, and answered
  401 before one byte of the body is read (nobody without a key can make the server spool data);
- the body is counted while it streams, whether it has a ``Content-Length`` or is chunked, and the
  request is answered 413 as soon as it passes the upload limit — at most the limit is ever held;
- every response gets the security headers (no MIME sniffing, no framing, no referrer) and is
  counted by status code for ``/metrics``;
- the database pool running dry while authenticating answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import threading
from collections import Counter

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse

from .auth import authenticate

#: room for the multipart boundaries and part headers around the uploaded file
MULTIPART_OVERHEAD = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
RETRY_AFTER_S = 2


class ResponseCounter:
    """Responses of this process by status code (thread-safe)."""

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self._lock = threading.Lock()

    def add(self, status: int) -> None:
        with self._lock:
            self._counts[status] += 1

    def snapshot(self) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(self._counts.items())


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The service's error body, ``{"error": {"status": …, "message": …}}``."""
    return JSONResponse({"error": {"status": status, "message": message}}, status, headers=headers)


class RequestGuard:
    """See the module docstring. ``app_state`` is the FastAPI app's ``state`` (config, sessions,
    response counter), read per request so the guard needs nothing else."""

    def __init__(self, app, app_state) -> None:
        self.app, self.state = app, app_state

    def _authenticate(self, key: str | None):
        with self.state.sessions() as session:
            return authenticate(session, key)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False
        counter: ResponseCounter = self.state.responses

        async def send_guarded(message) -> None:
            if answered:
                return  # the guard has answered; whatever the app still says is dropped
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("content-security-policy", "frame-ancestors 'none'")
                counter.add(message["status"])
            await send(message)

        async def answer(response: JSONResponse) -> None:
            nonlocal answered
            await response(scope, receive, send_guarded)
            answered = True

        config = self.state.config
        limit = config.max_bytes + MULTIPART_OVERHEAD
        if scope["method"] in BODY_METHODS:
            headers = Headers(scope=scope)
            if scope["path"].startswith("/v1/"):
                try:
                    principal = await anyio.to_thread.run_sync(self._authenticate, headers.get("x-api-key"))
                except SQLAlchemyError:
                    await answer(error_response(503, "the service is saturated; retry shortly", {"Retry-After": str(RETRY_AFTER_S)}))
                    return
                if principal is None:
                    await answer(error_response(401, "missing or invalid API key; send it in the X-API-Key header", {"WWW-Authenticate": "APIKey"}))
                    return
                scope.setdefault("state", {})["principal"] = principal
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                await answer(error_response(413, f"request body exceeds the {config.max_bytes} byte upload limit"))
                return
        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    await answer(error_response(413, f"request body exceeds the {config.max_bytes} byte upload limit"))
                    return {"type": "http.disconnect"}  # the app stops reading; its reply is dropped
            return message

        try:
            await self.app(scope, receive_limited, send_guarded)
        except Exception:
            if not answered:
                raise
