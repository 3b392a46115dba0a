"""The embedded metadata store of a database: global id -> sentence or utterance (stdlib ``sqlite3``).

Text databases keep ``text``, ``ext_id`` (the corpus id), ``source`` (file), ``line`` and ``lang``; speech
databases keep ``path``, ``start``, ``duration`` (seconds), ``ext_id`` and ``lang``. Keys a row carries beyond
these go to a JSON ``extra`` column and come back merged into the row.

Rows are inserted with explicit ids (the global ids of the index) inside transactions, so a resumed build
writes exactly what an uninterrupted one does. Exact duplicate sentences are stored once (as LASER does
before mining): :meth:`Store.find_texts` looks texts up through a 64-bit hash index, and the duplicates' own
ids go to a ``duplicates`` table pointing at the kept row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from index.manifest import IndexFormatError

logger = logging.getLogger(__name__)

STORE_FILE = "store.sqlite"
STORE_VERSION = 1
COLUMNS = ("ext_id", "text", "source", "line", "lang", "path", "start", "duration")
_CHUNK = 900  # stay under SQLite's host-parameter limit on old builds (999)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    ext_id TEXT, text TEXT, text_hash INTEGER, source TEXT, line INTEGER, lang TEXT,
    path TEXT, start REAL, duration REAL, extra TEXT
);
CREATE INDEX items_text_hash ON items (text_hash);
CREATE TABLE duplicates (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL, ext_id TEXT, source TEXT, line INTEGER);
CREATE INDEX duplicates_id ON duplicates (id);
CREATE TABLE build_progress (shard INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, count INTEGER NOT NULL,
                             inputs INTEGER NOT NULL);
"""


class StoreError(IndexFormatError):
    """The store file is missing, corrupt or not a store of this version; the message names the file."""


def text_hash(text: str) -> int:
    """A signed 64-bit hash of a text (BLAKE2b), the key of the duplicate lookup index."""
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True
    )


class Store:
    """id -> metadata rows in one SQLite file. Thread-safe: one connection behind a lock.

    Use :meth:`create` or :meth:`open`, not the constructor.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()
        self._in_txn = False
        self.kind = self._meta("kind")

    # -- opening ----------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], kind: str = "text") -> Store:
        """Create a new store at ``path``.

        A file left empty by a run killed while creating it is initialised; any other existing file is
        refused.

        Raises:
            FileExistsError: ``path`` already holds a store or another file.
        """
        if kind not in ("text", "speech"):
            raise ValueError(f"store kind {kind!r}: use 'text' or 'speech'")
        path = Path(path)
        conn = _connect(path, readonly=False)
        with _guard(path):
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                conn.close()
                raise FileExistsError(f"{path}: a store already exists; open it with Store.open or remove it")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("format", str(STORE_VERSION)), ("kind", kind)],
            )
            conn.execute(f"PRAGMA user_version = {STORE_VERSION}")
            conn.execute("COMMIT")
        return cls(conn, path, readonly=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str], readonly: bool = True) -> Store:
        """Open an existing store.

        Raises:
            StoreError: the file is missing, not an SQLite database, or not a store of this version.
        """
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: store file is missing; rebuild the database")
        conn = _connect(path, readonly=readonly)
        with _guard(path):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version != STORE_VERSION or not {"meta", "items", "duplicates", "build_progress"} <= names:
            conn.close()
            raise StoreError(
                f"{path}: not a metadata store of version {STORE_VERSION} (user_version {version}, tables "
                f"{sorted(names)}); rebuild the database"
            )
        return cls(conn, path, readonly=readonly)

    def close(self) -> None:
        """Close the connection; an open transaction is rolled back."""
        with self._lock:
            if self._in_txn:
                self.rollback()
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -----------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a write transaction (no-op when one is open)."""
        with self._lock, _guard(self.path):
            if not self._in_txn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._in_txn = True

    def commit(self) -> None:
        """Commit the open transaction (no-op when none is open)."""
        with self._lock, _guard(self.path):
            if self._in_txn:
                self._conn.execute("COMMIT")
                self._in_txn = False

    def rollback(self) -> None:
        """Roll back the open transaction (no-op when none is open)."""
        with self._lock, _guard(self.path):
            if self._in_txn:
                self._conn.execute("ROLLBACK")
                self._in_txn = False

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction (joined when one is already open), committed on success."""
        with self._lock:
            if self._in_txn:
                yield
                return
            self.begin()
            try:
                yield
            except BaseException:
                self.rollback()
                raise
            self.commit()

    # -- rows -------------------------------------------------------------------------------------------

    def add_many(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert (or replace) rows, each with an explicit integer ``id``.

        Args:
            rows: dicts with ``id`` plus any of ``ext_id, text, source, line, lang, path, start, duration``;
                other keys are kept in ``extra``.

        Returns:
            Number of rows written.
        """
        self._check_writable()
        records = [_record(row) for row in rows]
        with self._lock, _guard(self.path), self.transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO items (id, ext_id, text, text_hash, source, line, lang, path, start, "
                "duration, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                records,
            )
        return len(records)

    def get_many(self, ids: Sequence[int] | Iterable[int]) -> list[dict[str, Any]]:
        """Rows for ``ids``, in the order asked (repeats allowed).

        Raises:
            KeyError: some id is not in the store (the message lists the first ones).
        """
        wanted = [int(i) for i in ids]
        found: dict[int, dict[str, Any]] = {}
        unique = sorted(set(wanted))
        with self._lock, _guard(self.path):
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                cur = self._conn.execute(
                    f"SELECT id, {', '.join(COLUMNS)}, extra FROM items WHERE id IN ({marks})", chunk
                )
                for row in cur:
                    found[row[0]] = _row_dict(row)
        missing = [i for i in unique if i not in found]
        if missing:
            raise KeyError(
                f"{len(missing)} id(s) not in store {self.path}: {missing[:10]}; ids run from 0 to {len(self) - 1}"
            )
        return [found[i] for i in wanted]

    def get(self, id_: int) -> dict[str, Any]:
        """The row of one id (KeyError when absent)."""
        return self.get_many([id_])[0]

    def __len__(self) -> int:
        with self._lock, _guard(self.path):
            return int(self._conn.execute("SELECT count(*) FROM items").fetchone()[0])

    def max_id(self) -> int:
        """The largest id stored, -1 when empty."""
        with self._lock, _guard(self.path):
            value = self._conn.execute("SELECT max(id) FROM items").fetchone()[0]
        return -1 if value is None else int(value)

    # -- duplicates -------------------------------------------------------------------------------------

    def find_text(self, text: str, below: int | None = None) -> int | None:
        """Id of the row whose text equals ``text`` exactly (lowest id), None when there is none.

        Args:
            text: the sentence.
            below: only consider ids smaller than this (a resumed build must not see rows it re-adds).
        """
        return self.find_texts([text], below=below)[0]

    def find_texts(self, texts: Sequence[str], below: int | None = None) -> list[int | None]:
        """Batched :meth:`find_text`: one id or None per text, in order."""
        hashes = [text_hash(t) for t in texts]
        limit = below if below is not None else 2**62
        hits: dict[int, list[tuple[int, str]]] = {}
        unique = sorted(set(hashes))
        with self._lock, _guard(self.path):
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                cur = self._conn.execute(
                    f"SELECT text_hash, id, text FROM items WHERE text_hash IN ({marks}) AND id < ? ORDER BY id",
                    [*chunk, limit],
                )
                for h, i, t in cur:
                    hits.setdefault(h, []).append((i, t))
        out: list[int | None] = []
        for t, h in zip(texts, hashes, strict=True):
            out.append(next((i for i, stored in hits.get(h, ()) if stored == t), None))
        return out

    def add_duplicates(self, rows: Iterable[dict[str, Any]]) -> int:
        """Record duplicates: each row has ``seq`` (its position in the input), ``id`` (the kept row) and
        optionally ``ext_id``, ``source``, ``line``."""
        self._check_writable()
        records = [
            (int(r["seq"]), int(r["id"]), r.get("ext_id"), r.get("source"), r.get("line")) for r in rows
        ]
        with self._lock, _guard(self.path), self.transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO duplicates (seq, id, ext_id, source, line) VALUES (?, ?, ?, ?, ?)",
                records,
            )
        return len(records)

    def duplicates_count(self) -> int:
        """Number of input items dropped as exact duplicates."""
        with self._lock, _guard(self.path):
            return int(self._conn.execute("SELECT count(*) FROM duplicates").fetchone()[0])

    def duplicates_of(self, id_: int) -> list[dict[str, Any]]:
        """The dropped duplicates of row ``id_`` (their seq, ext_id, source, line), in input order."""
        with self._lock, _guard(self.path):
            cur = self._conn.execute(
                "SELECT seq, ext_id, source, line FROM duplicates WHERE id = ? ORDER BY seq", (int(id_),)
            )
            return [
                {k: v for k, v in zip(("seq", "ext_id", "source", "line"), r, strict=True) if v is not None}
                for r in cur
            ]

    # -- build bookkeeping ------------------------------------------------------------------------------

    def mark_shard(self, shard: int, first_id: int, count: int, inputs: int) -> None:
        """Record (in the open transaction) that the rows of ``shard`` are written."""
        self._check_writable()
        with self._lock, _guard(self.path), self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO build_progress (shard, first_id, count, inputs) VALUES (?, ?, ?, ?)",
                (shard, first_id, count, inputs),
            )

    def shard_done(self, shard: int) -> bool:
        """Whether the rows of ``shard`` were committed by an earlier run."""
        with self._lock, _guard(self.path):
            row = self._conn.execute("SELECT 1 FROM build_progress WHERE shard = ?", (shard,)).fetchone()
        return row is not None

    def quick_check(self) -> list[str]:
        """SQLite's ``PRAGMA quick_check`` (reads the whole file): problems, each naming the file."""
        with self._lock:
            try:
                rows = [r[0] for r in self._conn.execute("PRAGMA quick_check")]
            except sqlite3.DatabaseError as exc:
                return [f"{self.path}: corrupt store ({exc})"]
        return [] if rows == ["ok"] else [f"{self.path}: {r}" for r in rows]

    # -- helpers ----------------------------------------------------------------------------------------

    def _meta(self, key: str) -> str:
        with self._lock, _guard(self.path):
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: meta key {key!r} is missing; rebuild the database")
        return str(row[0])

    def _check_writable(self) -> None:
        if self.readonly:
            raise PermissionError(
                f"{self.path}: store is open read-only; open it with readonly=False to write"
            )


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store ({exc})") from exc
    return conn


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    """Turn SQLite errors into :class:`StoreError` naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        hint = "rebuild the database"
        if "readonly" in str(exc) or "read-only" in str(exc):
            hint = "an interrupted write left a journal: resume the build (or open it read-write once)"
        raise StoreError(f"{path}: store error ({exc}); {hint}") from exc


def _record(row: dict[str, Any]) -> tuple[Any, ...]:
    if "id" not in row:
        raise ValueError(f"store row without 'id': {row!r}; rows need their explicit global id")
    id_ = int(row["id"])
    if id_ < 0:
        raise ValueError(f"store row id {id_} is negative; ids are the index's global ids (>= 0)")
    text = row.get("text")
    extra = {k: v for k, v in row.items() if k != "id" and k not in COLUMNS}
    return (
        id_,
        _opt(row.get("ext_id"), str),
        text,
        text_hash(text) if isinstance(text, str) else None,
        _opt(row.get("source"), str),
        _opt(row.get("line"), int),
        _opt(row.get("lang"), str),
        _opt(row.get("path"), str),
        _opt(row.get("start"), float),
        _opt(row.get("duration"), float),
        json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else None,
    )


def _opt(value: Any, cast: type) -> Any:
    return None if value is None else cast(value)


def _row_dict(row: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": row[0]}
    for name, value in zip(COLUMNS, row[1:-1], strict=True):
        if value is not None:
            out[name] = value
    if row[-1]:
        out.update(json.loads(row[-1]))
    return out
