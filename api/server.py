"""How ``miner serve`` runs uvicorn: one process, a header timeout, a connection limit, keep-alive.

uvicorn has no timeout for reading a request's headers: 100 connections that send half their headers stayed
open indefinitely (issue 18). :class:`HeaderTimeoutH11Protocol` closes a connection that has not delivered a
complete request head within ``header_timeout_s`` of connecting, or of its previous response (keep-alive).
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
    """uvicorn's h11 protocol, closing connections whose request head does not arrive in time."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm_head_timer()  # a request head arrived: the app's own deadlines apply now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is in progress
        if not self.transport.is_closing():
            log.info(
                "closing a connection from %s: no complete request head in %g s",
                self.client,
                self.header_timeout_s,
            )
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with its header timeout set."""
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": float(seconds)})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn keyword arguments the settings decide (header timeout, connection limit, keep-alive)."""
    return {
        "http": protocol_with_header_timeout(settings.header_timeout_s),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_s,
    }
