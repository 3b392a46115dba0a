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

Admission by cost, not count: each item carries a cost (seconds of audio, text tokens) and the batcher
measures what its encoder gets through per second (cost units per second, a moving average over forward
passes). An item whose expected wait, the cost queued ahead of it plus what is left of the pass in flight
divided by that rate, exceeds ``max_queue_wait_s`` is refused at once with :class:`QueueFull` and a
``retry_after`` of about that wait: a client learns in milliseconds that the server is saturated instead of
timing out after a minute while the server still computes its answer (measured on a 2-core VM before this: a
burst of 200 requests, p50 27.8 s, 24 clients gave up at 55 s). Items whose caller stopped waiting (request
cancelled, client gone, deadline passed) are dropped before their forward pass.
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
    """More items are waiting for an encoder than the queue holds, or the expected wait is over the limit;
    retry after ``retry_after`` seconds."""

    def __init__(self, name: str, size: int, retry_after: float = 1.0, message: str | None = None):
        super().__init__(
            message
            or f"the {name} encoder queue is full ({size} items waiting): retry shortly or run more replicas"
        )
        self.retry_after = retry_after


class BatcherClosed(RuntimeError):
    """The batcher was shut down before the item was encoded (server stopping)."""


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future[np.ndarray]
    cost: float = 1.0


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
        max_queue_wait_s: refuse an item whose expected wait (cost queued ahead / measured rate) is longer
            (``None``: admit by count only).
        initial_rate: cost units per second assumed before the first forward pass is measured (``None``: no
            admission by wait until then).
        max_batch_cost: a batch also ends before its items' cost (audio seconds) passes this, so a pass does
            similar work whatever the clip lengths (``None``: ``batch_size`` alone; one item always fits).
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
        max_queue_wait_s: float | None = None,
        initial_rate: float | None = None,
        max_batch_cost: float | None = None,
    ):
        if batch_size < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError(
                f"batch_size ({batch_size}) and queue_size ({queue_size}) must be >= 1 and max_wait_ms "
                f"({max_wait_ms}) >= 0"
            )
        self.name = name
        self._encode = encode
        self.batch_size = batch_size
        self.max_batch_cost = max_batch_cost
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._on_batch = on_batch
        self.max_queue_wait_s = max_queue_wait_s
        self.rate: float | None = initial_rate  # cost units per second of encoding (moving average)
        self._queued_cost = 0.0
        self._inflight_cost = 0.0
        self._inflight_since = 0.0
        self.dropped = 0  # items whose caller stopped waiting before their forward pass
        self.refused = 0  # items refused at submit (queue full or expected wait too long)
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

    @property
    def queued_cost(self) -> float:
        """Cost (audio seconds, tokens) of the items waiting, not counting the batch being encoded."""
        return self._queued_cost

    def expected_wait(self, extra_cost: float = 0.0) -> float | None:
        """Seconds until an item of ``extra_cost`` submitted now would be encoded (None before any measure).

        (queued cost + cost of the pass in flight + ``extra_cost``) / rate, less the time the pass in flight has
        already run.
        """
        if not self.rate:
            return None
        inflight = 0.0
        if self._inflight_cost:
            inflight = max(0.0, self._inflight_cost / self.rate - (time.monotonic() - self._inflight_since))
        return (self._queued_cost + extra_cost) / self.rate + inflight

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

    async def submit(self, item: T, cost: float = 1.0) -> np.ndarray:
        """Encode one item in the next batch.

        Args:
            item: what the encode function takes.
            cost: its share of the work (seconds of audio, tokens); what admission and the rate count.

        Returns:
            Its float32 (dim,) row of the encode function's output.

        Raises:
            QueueFull: ``queue_size`` items are already waiting, or its expected wait exceeds
                ``max_queue_wait_s``.
            BatcherClosed: the batcher is not running.
            Exception: whatever the encode function raised for this item.
        """
        return await self.enqueue(item, cost)

    def enqueue(self, item: T, cost: float = 1.0) -> asyncio.Future[np.ndarray]:
        """Admit one item and return the future of its row (cancel it to drop the item before its pass).

        Raises:
            QueueFull, BatcherClosed: as :meth:`submit`, at once.
        """
        if self._worker is None or self._more is None:
            raise BatcherClosed(f"the {self.name} batcher is not running")
        if len(self._waiting) >= self.queue_size:
            self.refused += 1
            raise QueueFull(self.name, len(self._waiting), retry_after=self._retry_after())
        self.check_admission(cost)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(item, future, float(cost)))
        self._queued_cost += float(cost)
        self._more.set()
        return future

    def check_admission(self, cost: float) -> None:
        """Raise :class:`QueueFull` if work of ``cost`` submitted now would wait over ``max_queue_wait_s``."""
        if self.max_queue_wait_s is None:
            return
        wait = self.expected_wait(cost)
        if wait is not None and wait > self.max_queue_wait_s:
            self.refused += 1
            raise QueueFull(
                self.name,
                len(self._waiting),
                retry_after=wait - self.max_queue_wait_s + 1.0,
                message=f"the {self.name} encoder is saturated: this request would wait about {wait:.1f} s, "
                f"over the server's limit of {self.max_queue_wait_s:g} s (max_queue_wait_s); retry after "
                "Retry-After seconds or run more replicas",
            )

    def _retry_after(self) -> float:
        wait = self.expected_wait()
        return max(1.0, wait) if wait is not None else 1.0

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
        cost = 0.0
        limit = self.max_batch_cost
        deadline = loop.time() + self.max_wait_s
        while True:
            # clear before draining: a submit after the drain sets the event again, so no wake-up is lost
            self._more.clear()
            full = False
            while self._waiting and len(batch) < self.batch_size:
                pending = self._waiting[0]
                if pending.future.done():  # the caller stopped waiting (client gone, deadline passed)
                    self._waiting.popleft()
                    self._queued_cost -= pending.cost
                    self.dropped += 1
                    continue
                if limit is not None and batch and cost + pending.cost > limit:
                    full = True  # it waits at the head of the queue for the next pass
                    break
                self._waiting.popleft()
                self._queued_cost -= pending.cost
                batch.append(pending)
                cost += pending.cost
            if not self._waiting:
                self._queued_cost = 0.0  # no float drift
            remaining = deadline - loop.time()
            if full or len(batch) >= self.batch_size or remaining <= 0 or self._announced <= 0:
                return batch
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._more.wait(), remaining)

    async def _encode_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[T]]) -> None:
        batch = [p for p in batch if not p.future.done()]  # callers that left while the batch formed
        if not batch:
            return
        items = [p.item for p in batch]
        cost = sum(p.cost for p in batch)
        self._inflight_cost, self._inflight_since = cost, time.monotonic()
        started = time.perf_counter()
        try:
            out = await loop.run_in_executor(self._executor, self._timed_encode, items)
            self._measure(cost, time.perf_counter() - started)
        except asyncio.CancelledError:  # aclose() during a forward pass: nobody may wait forever
            self._inflight_cost = 0.0
            for pending in batch:
                _fail(pending, BatcherClosed(f"the {self.name} batcher was shut down during a forward pass"))
            raise
        except Exception as exc:
            self._inflight_cost = 0.0
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
        self._inflight_cost = 0.0
        if out.shape[0] != len(batch):
            error = RuntimeError(f"{self.name} encoder returned {out.shape[0]} rows for {len(batch)} items")
            for pending in batch:
                _fail(pending, error)
            return
        for i, pending in enumerate(batch):
            if not pending.future.done():
                pending.future.set_result(np.array(out[i], dtype=np.float32, copy=True))

    def _measure(self, cost: float, seconds: float) -> None:
        """Fold one forward pass into the rate (cost units per second; recent passes weigh more)."""
        if cost <= 0 or seconds <= 0:
            return
        rate = cost / seconds
        self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate

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
