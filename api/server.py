"""How ``miner serve`` runs uvicorn: one process, a header timeout, a connection limit, keep-alive.

uvicorn has no timeout for reading a request's headers: 100 connections that send half their headers stayed
open indefinitely (issue 18). :class:`HeaderTimeoutH11Protocol` closes a connection that has not delivered a
complete request head within ``header_timeout_s`` of connecting, or of its previous response (keep-alive), and
one whose request body is still incomplete ``body_timeout_s`` after its head (a slow upload holds a connection
as well as slow headers).
``max_connections`` becomes uvicorn's ``limit_concurrency`` (503 at once past it), ``keep_alive_s`` its
``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from api.settings import Settings

__all__ = ["HeaderTimeoutH11Protocol", "protocol_with_header_timeout", "uvicorn_options"]

log = logging.getLogger(__name__)


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head (or body) does not arrive in time.

    One timer per connection: ``header_timeout_s`` for a request head, from the connection's start or from
    the previous response (keep-alive); once a head with a body arrived, ``body_timeout_s`` for the whole
    body; none while the app answers.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading = "head"
        self._arm("head")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return  # still waiting for a head: its timer runs
        if cycle.more_body:
            if self._reading != "body":
                self._arm("body")  # the head arrived: the body has its own, longer, deadline
        elif self._reading != "done":
            self._disarm()  # the request is read: the app's own deadlines apply now
            self._reading = "done"

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm("head")  # the next request's head, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, reading: str) -> None:
        self._disarm()
        self._reading = reading
        seconds = self.header_timeout_s if reading == "head" else self.body_timeout_s
        self._read_timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        timer = getattr(self, "_read_timer", None)
        if timer is not None:
            timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        self._read_timer = None
        cycle = self.cycle
        waiting_head = self._reading == "head" and (cycle is None or cycle.response_complete)
        waiting_body = self._reading == "body" and cycle is not None and cycle.more_body
        if (waiting_head or waiting_body) and not self.transport.is_closing():
            seconds = self.header_timeout_s if waiting_head else self.body_timeout_s
            log.info(
                "closing a connection from %s: no complete request %s in %g s",
                self.client,
                self._reading,
                seconds,
            )
            self.transport.close()


def protocol_with_header_timeout(
    seconds: float, body_seconds: float = 60.0
) -> type[HeaderTimeoutH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with its head and body timeouts set."""
    attrs = {"header_timeout_s": float(seconds), "body_timeout_s": float(body_seconds)}
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), attrs)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn keyword arguments the settings decide (header timeout, connection limit, keep-alive)."""
    return {
        "http": protocol_with_header_timeout(settings.header_timeout_s, settings.body_timeout_s),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_s,
    }
