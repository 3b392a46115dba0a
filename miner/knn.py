"""The nearest-neighbour searches of the miner: exact inner-product kNN, a caller's search, and the index over
the sources that backward neighbourhoods are searched in.

Backward kNN (each candidate target's k nearest sources) costs targets x sources with a flat index, and the
candidate targets grow with the sources (about 3-4 per source at k = 4), so the step is quadratic in the
number of sources: on 2 CPU threads it overtakes the forward search near 100k sources (docs/benchmarks.md).
Where a flat search would compute at least :data:`IVF_MIN_WORK` (queries x sources x dim) multiply-adds, the
backward index is an inverted file (IVF, ~4 sqrt(n) lists, nprobe :data:`BACKWARD_NPROBE`) instead, as
large-scale miners such as stopes search approximate indexes in both directions; ``backward_index="flat"``
keeps it exact at any size. The gain is smaller than the count of distances suggests: faiss scans IVF lists
query by query, while a flat search is one BLAS matrix product; and on real e5 embeddings nprobe 16 changed ~2%
of the mined pairs (docs/benchmarks.md, "Margin step at scale"), so IVF is only worth it on large work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from miner.mine_inputs import normalised

__all__ = ["BACKWARD_INDEXES", "IVF_MIN_WORK", "SearchFn", "backward_knn", "ivf_pays", "knn", "source_index"]

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``search_fn(queries (q, d) float32, k) -> (D (q, k) float32, I (q, k) int64)``: best first, global ids."""

BACKWARD_INDEXES = ("auto", "flat", "ivf")
# auto: IVF where queries x sources x dim reaches this. Measured on 2 threads (docs/benchmarks.md): 7.0e11
# (real 384-d e5, 92k sources, 20k queries) flat 11.9 s vs IVF 11.3 s, no gain for 2% of the pairs changed;
# 4.8e12 (768-d, 50k x 124k) flat 33.9 s vs IVF 29.5 s (nprobe 32); 1.4e13 (100k x 188k) 99.9 s vs 45.0 s.
IVF_MIN_WORK = 4e12
BACKWARD_NPROBE = 16
_MIN_POINTS_PER_LIST = 39  # faiss warns below this many training points per centroid


def check_k(k: int) -> None:
    """Raise ValueError unless ``k`` is an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def knn(
    x: np.ndarray, y: np.ndarray | None = None, k: int = 4, *, search_fn: SearchFn | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product k nearest neighbours of each row of ``x`` among the rows of ``y``.

    Args:
        x: (n, d) float32 queries, L2-normalised by the caller (so inner product = cosine).
        y: (m, d) float32 database, normalised likewise; searched with ``faiss.IndexFlatIP``.
        k: neighbours wanted; k' = min(k, m) come back, as in LASER.
        search_fn: instead of ``y``, a search over a database held elsewhere (e.g. a ShardedIndex whose
            results are merged over all shards with global ids). Trailing columns that are -1 for every query
            (a database smaller than k) are dropped.

    Returns:
        D (n, k') float32 similarities, best first, and I (n, k') int64 row ids.

    Raises:
        ValueError: ``k`` < 1, both or neither of ``y`` / ``search_fn``, mismatched dims, or a ``search_fn``
            result with the wrong shape or with missing neighbours (-1) in some rows only.
    """
    check_k(k)
    k = int(k)  # faiss wants a Python int, not a numpy integer
    if (y is None) == (search_fn is None):
        raise ValueError("knn needs exactly one of y (a matrix) and search_fn (a search over a database)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"queries must be a 2-D (n, d) array, got shape {x.shape}")
    if search_fn is not None:
        return checked_search(search_fn, x, k)
    import faiss  # local: importing miner.mine stays cheap

    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim != 2 or y.shape[1] != x.shape[1]:
        raise ValueError(f"database must be (m, {x.shape[1]}) like the queries, got shape {y.shape}")
    kk = min(k, y.shape[0])
    if kk == 0 or x.shape[0] == 0:
        return np.zeros((x.shape[0], kk), np.float32), np.zeros((x.shape[0], kk), np.int64)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(y)
    sims, ids = index.search(x, kk)
    return sims.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def checked_search(search_fn: SearchFn, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims, ids = search_fn(x, k)
    sims = np.asarray(sims, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if sims.shape != ids.shape or sims.ndim != 2 or sims.shape[0] != x.shape[0] or sims.shape[1] > k:
        raise ValueError(
            f"search_fn must return D and I of shape ({x.shape[0]}, <= {k}), got {sims.shape} and {ids.shape}"
        )
    valid_cols = np.asarray((ids >= 0).any(axis=0))
    keep = int(valid_cols.sum())
    if not valid_cols[:keep].all():
        raise ValueError("search_fn returned -1 ids before valid ones: results must be sorted best first")
    sims, ids = sims[:, :keep], ids[:, :keep]
    if (ids < 0).any():
        bad = np.flatnonzero((ids < 0).any(axis=1))[:5].tolist()
        raise ValueError(
            f"search_fn found fewer than {keep} neighbours for query rows {bad}: an exact search must return "
            "min(k, database size) neighbours for every query"
        )
    return sims, ids


def source_index(
    x: np.ndarray,
    backward_index: str = "auto",
    nprobe: int = BACKWARD_NPROBE,
    seed: int = 0,
    n_queries: int | None = None,
) -> Any:
    """A faiss inner-product index over the sources ``x`` for backward kNN.

    Args:
        x: (n, d) float32 L2-normalised sources.
        backward_index: ``flat`` (exact), ``ivf`` (inverted file, approximate), or ``auto`` (IVF where
            ``n_queries`` x n x d reaches :data:`IVF_MIN_WORK`, else flat).
        nprobe: lists an IVF search visits.
        seed: k-means seed of the IVF training sample.
        n_queries: rows that will be searched (``auto`` only; default n).

    Returns:
        A faiss index holding all n rows with their row numbers as ids. An IVF index has
        nlist = clip(4 sqrt(n), 64, n / 39) lists trained on up to 256 points per list; too few sources to
        train one (nlist < 64 would be needed) give a flat index.
    """
    import faiss  # local: importing the miner stays cheap

    if backward_index not in BACKWARD_INDEXES:
        raise ValueError(f"backward_index {backward_index!r}: use one of {', '.join(BACKWARD_INDEXES)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    nlist = ivf_nlist(n)
    queries = n if n_queries is None else n_queries
    use_ivf = backward_index == "ivf" or (backward_index == "auto" and ivf_pays(n, queries, d))
    if not use_ivf or nlist < 64:
        flat = faiss.IndexFlatIP(d)
        flat.add(x)
        return flat
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    sample = x
    if n > 256 * nlist:
        rows = np.random.default_rng(seed).choice(n, 256 * nlist, replace=False)
        sample = x[np.sort(rows)]
    ivf.train(sample)
    ivf.add(x)
    ivf.nprobe = min(nprobe, nlist)
    return ivf


def ivf_pays(n_sources: int, n_queries: int, dim: int) -> bool:
    """``auto``'s rule: an IVF index over the sources once a flat search would do :data:`IVF_MIN_WORK`
    multiply-adds (queries x sources x dim)."""
    return float(n_queries) * n_sources * dim >= IVF_MIN_WORK


def ivf_nlist(n: int) -> int:
    """Lists of the IVF index over ``n`` sources: clip(4 sqrt(n), 64, n / 39) (below 64: too few to train)."""
    return min(max(int(4 * math.sqrt(n)), 64), n // _MIN_POINTS_PER_LIST)


def backward_knn(
    x: np.ndarray,
    y: np.ndarray,
    ids: np.ndarray,
    k: int,
    batch_size: int,
    *,
    normalise: bool,
    backward_index: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Backward kNN of target rows ``ids`` of ``y`` against all sources ``x``, in batches of ``batch_size``.

    Args:
        x: float32 (n, d) unit source rows; one index over them (:func:`source_index`).
        y: (m, d) targets (an array or memory map); only rows ``ids`` are read, normalised when ``normalise``.
        ids: int64 (t,) target rows.

    Returns:
        (sims float32 (t, min(k, n)), nbrs int64 (t, min(k, n))): source rows, nearest first.
    """
    kk = min(k, x.shape[0])
    index = source_index(x, backward_index, n_queries=len(ids))
    sims = np.empty((len(ids), kk), np.float32)
    nbrs = np.empty((len(ids), kk), np.int64)
    for lo in range(0, len(ids), batch_size):
        rows = ids[lo : lo + batch_size]
        q = y[rows]
        q = normalised(q, "y", row_ids=rows) if normalise else np.ascontiguousarray(q, dtype=np.float32)
        sims[lo : lo + len(rows)], nbrs[lo : lo + len(rows)] = index.search(q, kk)
    return sims, nbrs
