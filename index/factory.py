"""Choose a faiss index factory for n vectors of dim d within a memory budget, and tune nprobe.

The choice follows autofaiss's reasoning: exact search (Flat) while the data is small enough to scan; an
inverted file with about 4*sqrt(n) lists and uncompressed codes for millions; 8-bit scalar codes when the
float32 codes do not fit; OPQ + IVF + PQ when memory is short. Every estimate is the size of the index in
memory (codes, ids, centroids, transforms); the process needs some headroom on top for queries.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import faiss
import numpy as np

logger = logging.getLogger(__name__)

FLAT_MAX = 200_000  # exact search of 200k x 768 floats is ~10 ms per query on one core
IVF_FLAT_MAX = 4_000_000  # above this, uncompressed IVF lists cost more than they buy
MIN_POINTS_PER_LIST = 39  # faiss k-means warns below 39 training points per centroid
PQ_CANDIDATES = (128, 96, 64, 48, 32, 24, 16, 8)
ID_BYTES = 8  # inverted lists store one int64 id per vector


class ResourceError(RuntimeError):
    """No index fits the resources given; the message says what to change."""


@dataclass(frozen=True)
class FactoryChoice:
    """An index factory string, its number of lists (None for Flat), estimated bytes and why it was chosen."""

    factory: str
    nlist: int | None
    est_bytes: int
    reason: str


def choose_nlist(n: int) -> int:
    """Number of inverted lists for n vectors: the power of two nearest 4*sqrt(n).

    Capped so that k-means has at least 39 training points per list, and at 65536.
    """
    if n <= 0:
        raise ValueError(f"n={n}: need a positive number of vectors")
    nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    cap = max(1, n // MIN_POINTS_PER_LIST)
    while nlist > cap:
        nlist //= 2
    return int(min(nlist, 65_536))


_FLAT = re.compile(r"^Flat$")
_IVF = re.compile(
    r"^(?:OPQ(?P<opq>\d+)(?:_(?P<opqd>\d+))?,)?IVF(?P<nlist>\d+),(?P<codes>Flat|SQ8|SQfp16|PQ(?P<m>\d+)(?:x(?P<bits>\d+))?)$"
)


def parse_factory(factory: str) -> dict[str, Any]:
    """Split a supported factory string into its parts.

    Supported: ``Flat``, ``IVF{nlist},Flat``, ``IVF{nlist},SQ8``, ``IVF{nlist},SQfp16``,
    ``IVF{nlist},PQ{m}[x{bits}]`` and ``OPQ{m}[_{d}],IVF{nlist},PQ{m}[x{bits}]`` (bits 1-8, default 8).

    Raises:
        ValueError: the string is none of these.
    """
    if _FLAT.match(factory):
        return {"kind": "flat", "nlist": None}
    m = _IVF.match(factory)
    if not m:
        raise ValueError(
            f"unsupported index factory {factory!r}: use 'Flat', 'IVF<nlist>,Flat', 'IVF<nlist>,SQ8' or "
            "'OPQ<m>,IVF<nlist>,PQ<m>'"
        )
    codes = m.group("codes")
    if m.group("bits") and not 1 <= int(m.group("bits")) <= 8:
        raise ValueError(f"index factory {factory!r}: PQ codes take 1 to 8 bits per sub-quantizer")
    return {
        "kind": "ivf",
        "nlist": int(m.group("nlist")),
        "codes": "PQ" if codes.startswith("PQ") else codes,
        "m": int(m.group("m")) if m.group("m") else None,
        "bits": int(m.group("bits") or 8) if m.group("m") else None,
        "opq": int(m.group("opq")) if m.group("opq") else None,
        "opq_dim": int(m.group("opqd")) if m.group("opqd") else None,
    }


def estimate_bytes(factory: str, n: int, dim: int) -> int:
    """Estimated in-memory size of a faiss index holding n vectors of dimension dim.

    Args:
        factory: a factory string accepted by :func:`parse_factory`.
        n: number of vectors.
        dim: their dimension.

    Returns:
        Bytes for codes, ids, centroids and transforms (query-time buffers not included).
    """
    parts = parse_factory(factory)
    if parts["kind"] == "flat":
        return 4 * n * dim
    nlist = parts["nlist"]
    codes = parts["codes"]
    d = parts["opq_dim"] or dim
    pq_bytes = -(-(parts["m"] or 0) * (parts["bits"] or 8) // 8)
    per_vector = {"Flat": 4 * d, "SQ8": d, "SQfp16": 2 * d}.get(codes, pq_bytes)
    total = n * (per_vector + ID_BYTES) + nlist * d * 4  # codes + ids + coarse centroids
    if codes == "SQ8":
        total += 2 * d * 4  # per-dimension min and range
    if codes == "PQ":
        total += 2 ** parts["bits"] * d * 4  # PQ codebooks: m sub-quantizers x 2^bits centroids x d/m floats
    if parts["opq"]:
        total += dim * d * 4  # the OPQ rotation matrix
    return int(total)


def make_index(factory: str, dim: int) -> faiss.Index:
    """An empty inner-product faiss index for a supported factory string.

    PQ indexes get ``do_polysemous_training = False``: faiss turns it on by default, it only serves Hamming
    pre-filtering (unused here), and it takes most of the training time.
    """
    parse_factory(factory)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = _ivf_of(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        if hasattr(ivf, "do_polysemous_training"):
            ivf.do_polysemous_training = False
    return index


def _pq_m(dim: int) -> list[int]:
    return [m for m in PQ_CANDIDATES if m < dim and dim % m == 0]


def choose_factory(n: int, dim: int, memory_budget_bytes: int) -> FactoryChoice:
    """Pick the most accurate index for n vectors of dimension dim that fits in ``memory_budget_bytes``.

    Args:
        n: expected number of vectors (> 0).
        dim: vector dimension (> 0).
        memory_budget_bytes: bytes the loaded index may take.

    Returns:
        The choice, with its estimated size and the reason.

    Raises:
        ValueError: n, dim or the budget is not positive.
        ResourceError: even the most compressed index does not fit; the message says what to change.
    """
    if n <= 0 or dim <= 0 or memory_budget_bytes <= 0:
        raise ValueError(
            f"choose_factory needs positive n, dim and memory budget; got n={n}, dim={dim}, "
            f"memory_budget_bytes={memory_budget_bytes}"
        )
    budget = memory_budget_bytes
    flat = estimate_bytes("Flat", n, dim)
    if n <= FLAT_MAX and flat <= budget:
        return FactoryChoice("Flat", None, flat, f"n={n} <= {FLAT_MAX}: exact search fits ({_gb(flat)})")
    nlist = choose_nlist(n)
    tried: list[str] = [f"Flat {_gb(flat)}"]
    if n <= IVF_FLAT_MAX:
        key = f"IVF{nlist},Flat"
        est = estimate_bytes(key, n, dim)
        if est <= budget:
            return FactoryChoice(
                key, nlist, est, f"n={n}: inverted file with ~4*sqrt(n) lists, float32 codes"
            )
        tried.append(f"{key} {_gb(est)}")
    key = f"IVF{nlist},SQ8"
    est = estimate_bytes(key, n, dim)
    if est <= budget:
        return FactoryChoice(key, nlist, est, f"n={n}: float32 codes do not fit {_gb(budget)}; 8-bit codes")
    tried.append(f"{key} {_gb(est)}")
    for m in _pq_m(dim):
        key = f"OPQ{m},IVF{nlist},PQ{m}"
        est = estimate_bytes(key, n, dim)
        if est <= budget:
            return FactoryChoice(
                key, nlist, est, f"n={n}: memory is short ({_gb(budget)}); {m}-byte PQ codes"
            )
        tried.append(f"{key} {_gb(est)}")
    smallest = min(_pq_m(dim) or [8])
    need = estimate_bytes(f"IVF{nlist},PQ{smallest}", n, dim) if _pq_m(dim) else n * (ID_BYTES + 8)
    raise ResourceError(
        f"no index for n={n} vectors of dim {dim} fits the memory budget of {_gb(budget)} (tried: "
        f"{'; '.join(tried)}). Raise the budget to at least {_gb(need)}, split the corpus into several "
        f"databases (fewer vectors each), or reduce the dimension (OPQ<m>_<d> with a smaller d)"
    )


def _gb(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


class TuneResult(NamedTuple):
    """nprobe reaching the target (None for indexes without lists) and the recalls measured with it."""

    nprobe: int | None
    recall_at_1: float
    recall_at_k: float


def _ivf_of(index: Any) -> Any | None:
    """The IVF part of a faiss index, or None."""
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, TypeError):
        return None


def _search(index: Any, xq: np.ndarray, k: int, nprobe: int | None) -> np.ndarray:
    if isinstance(index, faiss.Index):
        if nprobe is None:
            return index.search(xq, k)[1]
        return index.search(xq, k, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]  # type: ignore[call-arg]
    return index.search(xq, k, nprobe=nprobe)[1]  # ShardedIndex or anything with the same signature


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """k-recall@k: mean fraction of the true top-k ids found among the returned top-k (ids < 0 ignored).

    Args:
        found: (nq, >=k) int64 ids returned by the index.
        truth: (nq, >=k) int64 ids of exact search.
    """
    hits = 0
    total = 0
    for f, t in zip(found[:, :k], truth[:, :k], strict=True):
        t = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t, assume_unique=True))
        total += len(t)
    return hits / total if total else 1.0


def tune_nprobe(
    index: Any,
    xq: np.ndarray,
    k: int = 10,
    target_recall: float = 0.95,
    gt_ids: np.ndarray | None = None,
    *,
    nlist: int | None = None,
) -> TuneResult:
    """Smallest nprobe (within ~3%) whose k-recall@k against exact search reaches ``target_recall``.

    nprobe goes to each search call (``faiss.SearchParametersIVF``); the index is never modified.

    Args:
        index: a faiss index, or an object with ``search(x, k, nprobe=...)`` (a ShardedIndex).
        xq: (nq, d) float32 queries, L2-normalised.
        k: the k of recall@k.
        target_recall: recall@k to reach, in (0, 1].
        gt_ids: (nq, >=k) int64 ids of exact search; computed when None for indexes that can give them
            (Flat, or IVF with float32 codes searched with every list).
        nlist: number of lists when ``index`` is not a faiss index (a ShardedIndex reads it from its
            manifest; pass it for other wrappers).

    Returns:
        ``TuneResult(nprobe, recall_at_1, recall_at_k)``; nprobe is None for indexes without lists.
        When even nprobe = nlist misses the target (lossy codes), the smallest nprobe with the best recall
        is returned and a warning logged.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall={target_recall}: must be in (0, 1]")
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    ivf = _ivf_of(index) if isinstance(index, faiss.Index) else None
    if isinstance(index, faiss.Index):
        nlist = int(ivf.nlist) if ivf is not None else None
    elif nlist is None:
        nlist = getattr(index, "nlist", None)
    if gt_ids is None:
        exact_ok = nlist is None or (
            ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFlat)
        )
        if not exact_ok:
            raise ValueError("tune_nprobe: pass gt_ids (ids of exact search) for an index with lossy codes")
        gt_ids = _search(index, xq, k, nlist)
    gt_ids = np.asarray(gt_ids)
    if gt_ids.shape[0] != xq.shape[0] or gt_ids.shape[1] < k:
        raise ValueError(f"gt_ids has shape {gt_ids.shape}; expected ({xq.shape[0]}, >= {k})")

    cache: dict[int | None, tuple[float, float]] = {}

    def measure(nprobe: int | None) -> tuple[float, float]:
        if nprobe not in cache:
            found = _search(index, xq, k, nprobe)
            cache[nprobe] = (recall_at(found, gt_ids, 1), recall_at(found, gt_ids, k))
        return cache[nprobe]

    if nlist is None:
        r1, rk = measure(None)
        return TuneResult(None, r1, rk)
    # doubling finds a bracket (lo fails, hi passes); bisection then narrows it to the smallest passing nprobe.
    # nprobe = nlist (a full scan) is only measured when nothing smaller reaches the target.
    target = target_recall
    lo, hi = 0, 1
    while hi < nlist and measure(hi)[1] < target:
        lo, hi = hi, min(2 * hi, nlist)
    best = measure(hi)[1]
    if best < target_recall:
        logger.warning(
            "recall@%d is %.3f even with nprobe=nlist=%d (lossy codes): below the target %.3f; use a less "
            "compressed factory for higher recall",
            k,
            best,
            nlist,
            target_recall,
        )
        target = best
    while hi - lo > max(1, hi // 32):  # ~3% is close enough, and spares the costliest large-nprobe runs
        mid = (lo + hi) // 2
        if measure(mid)[1] >= target:
            hi = mid
        else:
            lo = mid
    r1, rk = measure(hi)
    logger.info("nprobe=%d of %d lists: recall@1 %.3f, recall@%d %.3f", hi, nlist, r1, k, rk)
    return TuneResult(hi, r1, rk)
