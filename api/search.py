"""Query checks and the search step shared by every search endpoint (no HTTP here)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from api.metrics import Metrics
from miner.databases import Database, Hit

__all__ = ["InvalidQuery", "check_k", "search_one"]


class InvalidQuery(ValueError):
    """A query parameter is out of its allowed range; the message names it and the range."""


def check_k(k: int, max_k: int) -> int:
    """Return ``k`` if 1 <= k <= max_k, else raise :class:`InvalidQuery`."""
    if not 1 <= k <= max_k:
        raise InvalidQuery(f"k={k} is out of range: ask for 1 to {max_k} results (the server's max_k)")
    return k


async def search_one(db: Database, vector: np.ndarray, k: int, metrics: Metrics | None = None) -> list[Hit]:
    """Search one query vector (float32 (dim,)) in a worker thread, so a large index never blocks the loop."""
    start = time.perf_counter()
    hits = await asyncio.to_thread(db.search, vector[None, :], k)
    if metrics is not None:
        metrics.search_seconds.labels(db.name).observe(time.perf_counter() - start)
    return hits[0]
