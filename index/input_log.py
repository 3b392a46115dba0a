"""Checkpoints of the open shard's inputs: what :meth:`index.build.ShardWriter.add` received since the last
committed shard, so that a killed build loses at most one checkpoint interval of encoding.

One file per interval, ``<folder>/<first input position, 15 digits>.npz``: the raw vectors of the new rows
(before normalisation, which is not idempotent), which input rows were new (not duplicates), and the rows as
JSON. Every file is written through a temp name, fsync and ``os.replace``. A resumed writer replays the files
past its last committed input through its own ``add`` (the same vectors in the same order: the same bytes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from index.manifest import IndexFormatError

logger = logging.getLogger(__name__)

Rows = list[dict[str, Any]] | None


class InputLog:
    """The checkpoint files of one build folder's open shard.

    Args:
        folder: where the files go (created at the first checkpoint).
        dim: vector dimension.
        every_rows: write a checkpoint every this many input rows (0: never write any).
        every_seconds: ... or when this many seconds passed since the last one (0: by rows only).
    """

    def __init__(self, folder: Path, dim: int, every_rows: int, every_seconds: float) -> None:
        self.folder = Path(folder)
        self.dim = dim
        self.every_rows = max(0, int(every_rows))
        self.every_seconds = max(0.0, float(every_seconds))
        self._entries: list[tuple[int, np.ndarray, np.ndarray, Rows]] = []
        self._rows = 0
        self._since = time.monotonic()
        self._replaying = False

    def remember(self, start: int, raw: np.ndarray, is_new: np.ndarray, rows: Rows) -> None:
        """Log one add() call and write a checkpoint when one is due.

        Args:
            start: input position of the call's first row.
            raw: float32 (n_new, dim) vectors as given (new rows only).
            is_new: bool (n_rows,) which input rows were new.
            rows: the call's rows before ids were given (None: a writer without a store).
        """
        if self._replaying or not self.every_rows:
            return
        copied = None if rows is None else [dict(r) for r in rows]
        self._entries.append((start, np.array(raw, dtype=np.float32, copy=True), is_new.copy(), copied))
        self._rows += len(is_new)
        due_time = self.every_seconds and time.monotonic() - self._since >= self.every_seconds
        if self._rows >= self.every_rows or due_time:
            self.write()

    def write(self) -> None:
        """Write what was logged since the last checkpoint as one file (nothing when nothing was)."""
        if not self._entries:
            return
        start = self._entries[0][0]
        rows_given = all(entry[3] is not None for entry in self._entries)
        rows = [r for entry in self._entries for r in (entry[3] or [])] if rows_given else None
        vectors = np.concatenate([entry[1] for entry in self._entries]).reshape(-1, self.dim)
        is_new = np.concatenate([entry[2] for entry in self._entries])
        encoded = np.frombuffer(json.dumps(rows).encode("utf-8"), dtype=np.uint8)
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f"{start:015d}.npz"
        tmp = self.folder / f".{path.name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, vectors=vectors, is_new=is_new, rows=encoded)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.debug("%s: checkpoint of inputs %d..%d", self.folder, start, start + len(is_new))
        self._entries, self._rows, self._since = [], 0, time.monotonic()

    def drop_before(self, committed: int) -> None:
        """Delete the files whose inputs all lie before ``committed`` (a committed shard holds them)."""
        if not self.folder.is_dir():
            return
        for path, start, n in self.files():
            if start + n <= committed:
                path.unlink()

    def replay(self, next_input: int, add: Callable[[np.ndarray, Rows], Any]) -> int:
        """Give ``add`` the inputs the files hold from ``next_input`` on, in order; returns the rows replayed.

        A file that starts past the inputs replayed so far leaves a gap: it and every later file are deleted
        (their rows are re-encoded by the caller). Nothing is logged while replaying.
        """
        if not self.folder.is_dir():
            return 0
        replayed = 0
        self._replaying = True
        try:
            found = self.files()
            for i, (path, start, n) in enumerate(found):
                if start + n <= next_input:
                    continue
                if start > next_input:
                    logger.warning(
                        "%s: checkpoint %s leaves a gap; deleting it and later ones", self.folder, path
                    )
                    for later, _, _ in found[i:]:
                        later.unlink()
                    break
                with np.load(path) as data:
                    vectors, is_new = data["vectors"], data["is_new"]
                    rows = json.loads(data["rows"].tobytes().decode("utf-8"))
                skip = next_input - start  # rows of this file a committed shard already holds
                add(vectors[int(is_new[:skip].sum()) :], rows[skip:] if rows is not None else None)
                replayed += n - skip
                next_input = start + n
        finally:
            self._replaying = False
        return replayed

    def remove(self) -> None:
        """Delete the folder (the database is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def files(self) -> list[tuple[Path, int, int]]:
        """(path, first input position, rows) of each checkpoint file, by position.

        Raises:
            IndexFormatError: a file is unreadable (names it: delete it to resume without it).
        """
        out = []
        for path in sorted(self.folder.glob("*.npz")):
            try:
                with np.load(path) as data:
                    n = len(data["is_new"])
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise IndexFormatError(
                    f"{path}: unreadable build checkpoint ({exc}); delete it (the build then re-encodes its rows)"
                ) from exc
            out.append((path, int(path.stem), n))
        return out
