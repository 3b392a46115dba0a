"""Length-sorted batching: similar lengths share a batch (less padding), results go back in input order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Yield index arrays (int64) of at most ``batch_size`` items, longest first.

    Longest first so that an out-of-memory error shows in the first batch, not after an hour.
    The sort is stable, so equal lengths keep their input order (deterministic batches).

    Args:
        lengths: length of each item (samples, characters, ...).
        batch_size: maximum items per batch, >= 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
