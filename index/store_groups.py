"""The store rows of the open shard, buffered and written in groups that depend on the input alone.

:class:`~index.build.ShardWriter` hands over each new row and each duplicate in input order; the rows reach
``store.sqlite`` in groups of :data:`STORE_GROUP` new rows (with the duplicates met before the group's last
row), and whatever is left at the shard's end. The groups follow the input, not the ``add()`` batches nor where
a resumed run replays from, so the SQLite file gets the same inserts in the same order and its pages come out
byte-identical (rows and duplicates written as the batches came interleaved the two tables' page allocations
differently).
"""

from __future__ import annotations

from typing import Any

from index.store import Store

__all__ = ["STORE_GROUP", "StoreGroups"]

STORE_GROUP = 1024  # new rows per group


class StoreGroups:
    """Buffer of one shard's store rows (``item``) and duplicates (``dup``), in input order.

    Args:
        store: the database's store; every group of a shard goes into one transaction, which the caller
            commits with the shard.
        skip: the rows of this shard are in the store already (a killed run committed them before its
            manifest listed the shard): buffer and drop them, never write them twice.
    """

    def __init__(self, store: Store, skip: bool) -> None:
        self.store = store
        self.skip = skip
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._items = 0  # new rows buffered

    def add_items(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Buffer new rows; returns the rows written by the groups that became full."""
        self._events.extend(("item", r) for r in rows)
        self._items += len(rows)
        return self.write(final=False)

    def add_duplicate(self, row: dict[str, Any]) -> None:
        """Buffer a duplicate (it is written with the group of the next new row, or at the shard's end)."""
        self._events.append(("dup", row))

    def write(self, final: bool) -> list[dict[str, Any]]:
        """Write the full groups; ``final``: everything left. Returns the new rows written (or skipped)."""
        written: list[dict[str, Any]] = []
        while self._events and (final or self._items >= STORE_GROUP):
            cut, seen = len(self._events), 0
            for i, (kind, _) in enumerate(self._events):
                seen += kind == "item"
                if seen == STORE_GROUP:
                    cut = i + 1
                    break
            group, self._events = self._events[:cut], self._events[cut:]
            items = [r for kind, r in group if kind == "item"]
            dups = [r for kind, r in group if kind == "dup"]
            self._items -= len(items)
            if not self.skip:
                self.store.begin()  # one transaction per shard, committed by the caller
                if items:
                    self.store.add_many(items)
                if dups:
                    self.store.add_duplicates(dups)
            written.extend(items)
        return written
