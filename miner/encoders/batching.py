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


def budget_batches(lengths: Sequence[int], max_items: int, max_padded: int | None) -> Iterator[np.ndarray]:
    """Like :func:`length_sorted_batches`, but a batch also ends before its padded size passes ``max_padded``.

    Longest first, so a batch's padded size is its item count times its first item's length. Sizing by padded
    length (audio seconds, not clip count) keeps every forward pass near the same work: many short clips or a
    few long ones, never 64 clips of 30 s. A single item longer than ``max_padded`` is a batch of its own.

    Args:
        lengths: length of each item (samples).
        max_items: most items per batch, >= 1.
        max_padded: most padded length (items x longest) per batch; ``None``: items alone decide.
    """
    if max_items < 1:
        raise ValueError(f"batch_size must be >= 1, got {max_items}")
    if max_padded is None:
        yield from length_sorted_batches(lengths, max_items)
        return
    if max_padded < 1:
        raise ValueError(f"the padded budget must be >= 1 sample, got {max_padded}")
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    start = 0
    while start < len(order):
        longest = max(int(lens[order[start]]), 1)
        count = max(1, min(max_items, max_padded // longest))
        yield order[start : start + count]
        start += count
