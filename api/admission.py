"""Waiting for the encoders on behalf of a request: cost per item, a deadline, and no work for clients gone.

Routes hand their items to :func:`encode_items`: it admits them at once or raises (``QueueFull`` when the
encoder's expected wait is over ``max_queue_wait_s``), then waits for their rows until the request deadline
(``request_timeout_s``) or until the client disconnects, whichever comes first. In the last two cases the
items still queued are cancelled, so the batcher drops them before their forward pass instead of computing
answers nobody reads (before this, a burst left the server computing for clients that had given up minutes
earlier).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from starlette.requests import Request

from api.batching import MicroBatcher
from miner.types import SAMPLE_RATE

__all__ = ["ClientDisconnected", "DeadlineExceeded", "encode_items", "speech_cost", "text_cost"]

# A clip's cost in seconds of audio, plus a fixed share for the per-item work (padding, pooling, copies).
_CLIP_OVERHEAD_S = 0.1
# A text's cost in tokens, plus a fixed share per item.
_TEXT_OVERHEAD_TOKENS = 4.0


class DeadlineExceeded(RuntimeError):
    """The request's items were not encoded within the server's request deadline (they were dropped)."""

    def __init__(self, seconds: float):
        super().__init__(
            f"the request was not answered within the server's deadline of {seconds:g} s (request_timeout_s): "
            "the server is busy; retry after Retry-After seconds"
        )
        self.retry_after = max(1.0, seconds / 4)


class ClientDisconnected(RuntimeError):
    """The client closed the connection while its items waited (they were dropped)."""


def speech_cost(wav: np.ndarray) -> float:
    """Cost of one 16 kHz clip for admission: its seconds plus a fixed per-item share."""
    return len(wav) / SAMPLE_RATE + _CLIP_OVERHEAD_S


def text_cost(tokens: int) -> float:
    """Cost of one text for admission: its tokens plus a fixed per-item share."""
    return float(tokens) + _TEXT_OVERHEAD_TOKENS


async def encode_items(
    batcher: MicroBatcher[Any],
    items: Sequence[Any],
    costs: Sequence[float],
    *,
    timeout: float | None,
    request: Request | None = None,
) -> list[np.ndarray]:
    """Encode ``items`` in the shared batches, refused at once when the encoder is saturated.

    Args:
        batcher: the encoder's batcher.
        items: what its encode function takes.
        costs: one cost per item (:func:`speech_cost`, :func:`text_cost`).
        timeout: seconds to wait for the rows (``None``: no deadline).
        request: the HTTP request, watched for the client disconnecting.

    Returns:
        One float32 (dim,) row per item, in order.

    Raises:
        QueueFull: the expected wait for all the items is over the batcher's limit, or its queue is full.
        DeadlineExceeded: not encoded within ``timeout``; the items still queued are dropped.
        ClientDisconnected: the client left; the items still queued are dropped.
    """
    batcher.check_admission(float(sum(costs)))
    futures: list[asyncio.Future[np.ndarray]] = []
    try:
        for item, cost in zip(items, costs, strict=True):
            futures.append(batcher.enqueue(item, cost))
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    rows = asyncio.gather(*futures)
    watcher = asyncio.ensure_future(_disconnect(request)) if request is not None else None
    waits: set[asyncio.Future[Any]] = {rows} | ({watcher} if watcher is not None else set())
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        rows.cancel()  # cancels every item's future: the batcher skips them
        raise
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
    if rows in done:
        return list(rows.result())
    rows.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await rows
    if watcher is not None and watcher in done:
        raise ClientDisconnected("the client closed the connection before its answer was ready")
    raise DeadlineExceeded(float(timeout or 0.0))


async def _disconnect(request: Request | None) -> None:
    """Return when the client disconnects (the request body has been read: only a disconnect can come)."""
    if request is None:
        await asyncio.Event().wait()
        return
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
