"""Request body size limit, enforced while the body streams in (pure ASGI middleware).

A declared ``Content-Length`` over the limit is refused before a byte of the body is read. Otherwise every
chunk the server receives is counted, and the first chunk past the limit stops the request: the app's own
reading (multipart parser, JSON body) fails with :class:`BodyTooLarge` and the client gets 413, whatever the
framework made of the exception on the way out. So a huge upload never sits in memory or on disk whole.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware", "BodyTooLarge"]

log = logging.getLogger(__name__)


class BodyTooLarge(ValueError):
    """The request body is larger than the server accepts."""

    def __init__(self, limit: int, seen: int | None = None):
        what = f"{seen} bytes" if seen is not None else "more than that"
        super().__init__(
            f"request body too large: {what}, the limit is {limit} bytes (max_upload_bytes); "
            "send a shorter or more compressed recording (e.g. FLAC or Opus, mono 16 kHz)"
        )
        self.limit = limit


class BodyLimitMiddleware:
    """Refuse HTTP request bodies over ``max_bytes`` with a JSON 413, counting bytes as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_413(send, BodyTooLarge(self.max_bytes, declared))
            return

        seen = 0
        exceeded: BodyTooLarge | None = None
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = BodyTooLarge(self.max_bytes, None)
                    raise exceeded
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded is not None:
                # Whatever the app answered (a 400 from a framework that wrapped our exception), send 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_413(send, exceeded)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if exceeded is None:
                raise
            if not started:
                await _send_413(send, exceeded)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, exc: BodyTooLarge) -> None:
    log.info("refused a request body: %s", exc)
    body = json.dumps({"error": {"code": "payload_too_large", "message": str(exc)}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
