"""The micro-batching queue, with a fake encoder (no model): batching, limits, errors, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from api.batching import BatcherClosed, MicroBatcher, QueueFull


def _rows(items: list[float]) -> np.ndarray:
    """Fake encoder: item x -> row [x, 2x]."""
    x = np.asarray(items, dtype=np.float32)
    return np.stack([x, 2 * x], axis=1)


def test_concurrent_items_share_forward_passes() -> None:
    seen: list[tuple[int, str]] = []

    def observe(size: int, seconds: float) -> None:
        seen.append((size, threading.current_thread().name))

    async def main() -> list[np.ndarray]:
        b = MicroBatcher("t", _rows, batch_size=4, max_wait_ms=50, on_batch=observe)
        b.start()
        try:
            return await asyncio.gather(*(b.submit(float(i)) for i in range(10))), b
        finally:
            await b.aclose()

    out, b = asyncio.run(main())
    for i, row in enumerate(out):
        np.testing.assert_array_equal(row, [i, 2 * i])
        assert row.dtype == np.float32
    assert b.forward_passes == 3 and b.items_encoded == 10
    assert b.batch_sizes == {4: 2, 2: 1}
    assert [s for s, _ in seen] == [4, 4, 2]
    assert all(name.startswith("encode-t") for _, name in seen)  # the model runs in its own thread


def test_lone_item_goes_at_once_announced_items_are_waited_for() -> None:
    async def main() -> tuple[float, float, MicroBatcher]:
        b = MicroBatcher("t", _rows, batch_size=64, max_wait_ms=300)
        b.start()
        try:
            start = time.perf_counter()
            await asyncio.wait_for(b.submit(1.0), timeout=5)
            lone = time.perf_counter() - start  # nothing announced: no reason to wait

            async def late_item() -> np.ndarray:
                with b.announce():
                    await asyncio.sleep(0.05)  # e.g. decoding audio
                return await b.submit(3.0)

            start = time.perf_counter()
            rows = await asyncio.wait_for(asyncio.gather(b.submit(2.0), late_item()), timeout=5)
            together = time.perf_counter() - start
            np.testing.assert_array_equal(np.stack(rows), [[2, 4], [3, 6]])
            return lone, together, b
        finally:
            await b.aclose()

    lone, together, b = asyncio.run(main())
    assert lone < 0.2  # well under max_wait_ms (300 ms)
    assert 0.04 <= together < 0.29  # waited for the announced item, not the whole 300 ms
    assert b.batch_sizes == {1: 1, 2: 1}  # the announced item joined the waiting one's batch


def test_announced_item_that_fails_does_not_hold_the_batch() -> None:
    async def main() -> float:
        b = MicroBatcher("t", _rows, batch_size=64, max_wait_ms=2000)
        b.start()
        try:

            async def failing() -> None:
                with b.announce():
                    await asyncio.sleep(0.02)
                    raise ValueError("bad upload")

            start = time.perf_counter()
            results = await asyncio.gather(b.submit(1.0), failing(), return_exceptions=True)
            assert isinstance(results[1], ValueError)
            return time.perf_counter() - start
        finally:
            await b.aclose()

    assert asyncio.run(main()) < 1.0


def test_encoding_runs_off_the_event_loop_and_full_queue_raises() -> None:
    release = threading.Event()
    started = threading.Event()

    def blocking(items: list[float]) -> np.ndarray:
        started.set()
        assert release.wait(timeout=10)
        return _rows(items)

    async def main() -> None:
        b = MicroBatcher("t", blocking, batch_size=1, max_wait_ms=0, queue_size=2)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(1.0))
            await asyncio.to_thread(started.wait, 5)  # the worker holds item 1 in a forward pass
            # the event loop is free while the model runs: these coroutines proceed
            waiting = [asyncio.ensure_future(b.submit(float(i))) for i in (2, 3)]
            await asyncio.sleep(0.01)
            assert b.depth == 2
            with pytest.raises(QueueFull, match="queue is full"):
                await b.submit(4.0)
            release.set()
            results = await asyncio.wait_for(asyncio.gather(first, *waiting), timeout=10)
            assert [float(r[0]) for r in results] == [1.0, 2.0, 3.0]
        finally:
            release.set()
            await b.aclose()

    asyncio.run(main())


def test_one_bad_item_fails_alone() -> None:
    def picky(items: list[float]) -> np.ndarray:
        if any(x < 0 for x in items):
            raise ValueError("negative item")
        return _rows(items)

    async def main() -> list[object]:
        b = MicroBatcher("t", picky, batch_size=8, max_wait_ms=30)
        b.start()
        try:
            return await asyncio.gather(*(b.submit(x) for x in (1.0, -1.0, 2.0)), return_exceptions=True)
        finally:
            await b.aclose()

    ok1, bad, ok2 = asyncio.run(main())
    assert isinstance(bad, ValueError) and "negative" in str(bad)
    np.testing.assert_array_equal(ok1, [1, 2])
    np.testing.assert_array_equal(ok2, [2, 4])


def test_cancelled_callers_are_skipped_and_close_fails_waiters() -> None:
    calls: list[list[float]] = []

    def record(items: list[float]) -> np.ndarray:
        calls.append(list(items))
        return _rows(items)

    async def main() -> None:
        b = MicroBatcher("t", record, batch_size=8, max_wait_ms=50)
        b.start()
        gone = asyncio.ensure_future(b.submit(9.0))
        await asyncio.sleep(0)
        gone.cancel()  # the client went away before its batch ran
        kept = await b.submit(1.0)
        np.testing.assert_array_equal(kept, [1, 2])
        assert calls == [[1.0]]
        await b.aclose()
        with pytest.raises(BatcherClosed):
            await b.submit(2.0)

    asyncio.run(main())


def test_close_fails_items_in_flight_and_waiting() -> None:
    release = threading.Event()
    started = threading.Event()

    def blocking(items: list[float]) -> np.ndarray:
        started.set()
        release.wait(timeout=10)
        return _rows(items)

    async def main() -> list[object]:
        b = MicroBatcher("t", blocking, batch_size=1, max_wait_ms=0)
        b.start()
        futures = [asyncio.ensure_future(b.submit(1.0))]
        await asyncio.to_thread(started.wait, 5)
        futures.append(asyncio.ensure_future(b.submit(2.0)))
        await asyncio.sleep(0.01)
        await b.aclose()
        release.set()
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=5)

    results = asyncio.run(main())
    assert all(isinstance(r, BatcherClosed) for r in results), results


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        MicroBatcher("t", _rows, batch_size=0)


def test_a_cost_budget_sizes_batches_by_audio_seconds() -> None:
    """max_batch_cost: a batch ends before its seconds pass the budget; one long item still goes alone."""
    sizes: list[int] = []

    async def main() -> list[np.ndarray]:
        b = MicroBatcher("t", _rows, batch_size=64, max_wait_ms=50, max_batch_cost=20.0,
                         on_batch=lambda size, _s: sizes.append(size))  # fmt: skip
        b.start()
        try:
            costs = [8.0, 8.0, 8.0, 30.0, 2.0, 2.0, 2.0]  # seconds of audio per item
            return await asyncio.gather(*(b.submit(float(i), cost=c) for i, c in enumerate(costs)))
        finally:
            await b.aclose()

    out = asyncio.run(main())
    for i, row in enumerate(out):  # every item answered with its own row, in submit order
        np.testing.assert_array_equal(row, [i, 2 * i])
    # 8+8 (a third 8 would pass 20), then 8 (30 would pass), then 30 alone, then 2+2+2
    assert sizes == [2, 1, 1, 3]
