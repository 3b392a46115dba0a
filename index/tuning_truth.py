"""Exact neighbours of the nprobe-tuning queries, gathered shard by shard while a database is written.

An IVF database's nprobe is tuned at the end of its build against exact search. The exact answer is collected
as the vectors stream in (each shard's top k per query, saved beside the shard), so tuning never re-reads the
shards' vectors. Files in the database folder, removed when the build finishes:

- ``.tune_queries.npy``: the query sample (saved before ``trained.faiss``, so a resumed build reuses it);
- ``.tune_NNNNN.npy``: shard NNNNN's top k, float64 (2, nq, k): similarities, then global ids.
"""

from __future__ import annotations

import io
from pathlib import Path

import faiss
import numpy as np

from index.manifest import atomic_write_bytes

__all__ = ["QUERIES_FILE", "ShardTruth", "is_tuning_file", "load_queries", "merged_truth", "sample_queries"]

QUERIES_FILE = ".tune_queries.npy"
_PART_FILE = ".tune_{:05d}.npy"


def is_tuning_file(name: str) -> bool:
    """Whether a file name in a database folder is one of these build-time files."""
    return name == QUERIES_FILE or (name.startswith(".tune_") and name.endswith(".npy"))


def sample_queries(folder: Path, sample: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``min(n, len(sample))`` rows of the training sample (float32 (nq, d), in sample order), saved in
    ``folder``."""
    rng = np.random.default_rng(seed)
    nq = min(n, len(sample))
    queries = np.ascontiguousarray(sample[np.sort(rng.choice(len(sample), nq, replace=False))])
    save_npy(folder / QUERIES_FILE, queries)
    return queries


def load_queries(folder: Path) -> np.ndarray | None:
    """The query sample a killed build saved, or None."""
    path = folder / QUERIES_FILE
    return np.load(path, allow_pickle=False) if path.exists() else None


class ShardTruth:
    """The exact top ``k`` (inner product) of each query among one shard's vectors, as they are added."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries = queries
        self.k = k
        self._heap = faiss.ResultHeap(len(queries), k, keep_max=True)

    def add(self, x: np.ndarray, first_id: int) -> None:
        """Vectors ``x`` float32 (m, d) whose global ids are ``first_id .. first_id + m - 1``."""
        dist, ids = faiss.knn(self.queries, x, min(self.k, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
        self._heap.add_result(dist, ids + first_id)

    def save(self, folder: Path, shard_no: int) -> None:
        self._heap.finalize()
        save_npy(
            folder / _PART_FILE.format(shard_no), np.stack([self._heap.D.astype(np.float64), self._heap.I])
        )


def merged_truth(folder: Path, n_shards: int, n_queries: int, k: int) -> np.ndarray:
    """int64 (n_queries, k): global ids of each query's exact top k over the saved shards."""
    heap = faiss.ResultHeap(n_queries, k, keep_max=True)
    for no in range(n_shards):
        part = np.load(folder / _PART_FILE.format(no), allow_pickle=False)
        heap.add_result(part[0].astype(np.float32), part[1].astype(np.int64))
    heap.finalize()
    return heap.I


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temp file and ``os.replace`` (a killed build never leaves half a file)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
