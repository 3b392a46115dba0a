"""Micro-batching: concurrent requests share one encoder forward pass.

Each request submits one item and awaits a future. One worker task per encoder takes the first waiting item,
gathers more until it holds ``batch_size`` items or ``max_wait_ms`` have passed, runs ONE call of the encode
function in a dedicated thread (the event loop keeps serving), and resolves every future with its row. Items
that arrive while a forward pass runs form the next batch, so under load batches fill up by themselves.

The wait is spent only when it can pay: requests :meth:`MicroBatcher.announce` an item while they prepare it
(e.g. decode audio), and a forming batch waits (at most ``max_wait_ms``) only while announced items are on
their way. A lone request is encoded at once, so batching adds no latency at low load.

The waiting line is bounded: past ``queue_size`` waiting items :meth:`MicroBatcher.submit` raises
:class:`QueueFull` at once (the HTTP edge answers 503 with ``Retry-After``) instead of letting latency grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["BatcherClosed", "MicroBatcher", "QueueFull"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class QueueFull(RuntimeError):
    """More items are waiting for an encoder than the queue holds; retry after ``retry_after`` seconds."""

    def __init__(self, name: str, size: int, retry_after: float = 1.0):
        super().__init__(
            f"the {name} encoder queue is full ({size} items waiting): retry shortly or run more replicas"
        )
        self.retry_after = retry_after


class BatcherClosed(RuntimeError):
    """The batcher was shut down before the item was encoded (server stopping)."""


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future[np.ndarray]


BatchObserver = Callable[[int, float], None]
"""Called after each forward pass with (batch size, seconds the encode function took)."""


class MicroBatcher(Generic[T]):
    """Collects items from concurrent callers into batches for one encode function.

    Args:
        name: label for logs and metrics (e.g. ``"speech"``).
        encode: ``list of n items -> float32 (n, dim)``; runs in a worker thread, one call at a time.
        batch_size: most items per call.
        max_wait_ms: longest wait for more items once the first one arrived.
        queue_size: most items waiting; more raise :class:`QueueFull`.
        on_batch: optional observer, e.g. Prometheus histograms.
    """

    def __init__(
        self,
        name: str,
        encode: Callable[[list[T]], np.ndarray],
        *,
        batch_size: int = 16,
        max_wait_ms: float = 5.0,
        queue_size: int = 256,
        on_batch: BatchObserver | None = None,
    ):
        if batch_size < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError(
                f"batch_size ({batch_size}) and queue_size ({queue_size}) must be >= 1 and max_wait_ms "
                f"({max_wait_ms}) >= 0"
            )
        self.name = name
        self._encode = encode
        self.batch_size = batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._on_batch = on_batch
        self._waiting: deque[_Pending[T]] = deque()
        self._announced = 0
        self._more: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.forward_passes = 0
        self.items_encoded = 0
        self.batch_sizes: Counter[int] = Counter()

    # -- life cycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._worker is not None:
            return
        self._more = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"encode-{self.name}")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def aclose(self) -> None:
        """Stop the worker, fail the items still waiting with :class:`BatcherClosed`, free the thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._waiting:
            pending = self._waiting.popleft()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed(f"the {self.name} batcher is shut down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def depth(self) -> int:
        """Items waiting for a forward pass (not counting the batch being encoded)."""
        return len(self._waiting)

    # -- callers ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def announce(self) -> Iterator[None]:
        """Tell the batcher an item is being prepared: a forming batch waits for it (up to ``max_wait_ms``).

        Use around the preparation and :meth:`submit` after the block (inside it, the batch would wait for an
        item it already holds)::

            with batcher.announce():
                wav = await decode(upload)
            vector = await batcher.submit(wav)
        """
        self._announced += 1
        try:
            yield
        finally:
            self._announced -= 1
            if self._more is not None:
                self._more.set()  # a batch waiting for this item re-checks at once

    async def submit(self, item: T) -> np.ndarray:
        """Encode one item in the next batch.

        Returns:
            Its float32 (dim,) row of the encode function's output.

        Raises:
            QueueFull: ``queue_size`` items are already waiting.
            BatcherClosed: the batcher is not running.
            Exception: whatever the encode function raised for this item.
        """
        if self._worker is None or self._more is None:
            raise BatcherClosed(f"the {self.name} batcher is not running")
        if len(self._waiting) >= self.queue_size:
            raise QueueFull(self.name, len(self._waiting))
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(item, future))
        self._more.set()
        return await future

    # -- worker -------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._more is not None  # set by start(); internal invariant, not user input
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._more.clear()
                await self._more.wait()
            batch = await self._collect(loop)
            if batch:
                await self._encode_batch(loop, batch)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Pending[T]]:
        assert self._more is not None
        batch: list[_Pending[T]] = []
        deadline = loop.time() + self.max_wait_s
        while True:
            # clear before draining: a submit after the drain sets the event again, so no wake-up is lost
            self._more.clear()
            while self._waiting and len(batch) < self.batch_size:
                pending = self._waiting.popleft()
                if not pending.future.done():  # the client went away (request cancelled)
                    batch.append(pending)
            remaining = deadline - loop.time()
            if len(batch) >= self.batch_size or remaining <= 0 or self._announced <= 0:
                return batch
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._more.wait(), remaining)

    async def _encode_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[T]]) -> None:
        items = [p.item for p in batch]
        try:
            out = await loop.run_in_executor(self._executor, self._timed_encode, items)
        except asyncio.CancelledError:  # aclose() during a forward pass: nobody may wait forever
            for pending in batch:
                _fail(pending, BatcherClosed(f"the {self.name} batcher was shut down during a forward pass"))
            raise
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            # one bad item must not fail its neighbours: retry one by one to find it
            log.warning(
                "%s batch of %d failed (%s); encoding its items one at a time", self.name, len(batch), exc
            )
            for pending in batch:
                await self._encode_batch(loop, [pending])
            return
        if out.shape[0] != len(batch):
            error = RuntimeError(f"{self.name} encoder returned {out.shape[0]} rows for {len(batch)} items")
            for pending in batch:
                _fail(pending, error)
            return
        for i, pending in enumerate(batch):
            if not pending.future.done():
                pending.future.set_result(np.array(out[i], dtype=np.float32, copy=True))

    def _timed_encode(self, items: Sequence[T]) -> np.ndarray:
        start = time.perf_counter()
        try:
            return np.asarray(self._encode(list(items)), dtype=np.float32)
        finally:
            # only the single worker thread writes these counters; failed passes count too
            self.forward_passes += 1
            self.items_encoded += len(items)
            self.batch_sizes[len(items)] += 1
            if self._on_batch is not None:
                self._on_batch(len(items), time.perf_counter() - start)


def _fail(pending: _Pending[Any], exc: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)
