"""Margin-based bitext mining: kNN in both directions, margin scores, the LASER retrieval modes, a threshold.

Definitions follow LASER's ``source/mine_bitexts.py`` (see :mod:`miner.margin`). For every source x the
candidates are its k nearest targets (forward); for every target y its k nearest sources (backward). Modes:

- ``fwd``: each source's best-scoring forward candidate.
- ``bwd``: each target's best-scoring backward candidate.
- ``intersect``: pairs that are both a source's fwd best and that target's bwd best.
- ``max``: pool the fwd and bwd bests, sort by score descending, accept greedily one-to-one (a source and a
  target are used once); optionally also never accept two sources of one recording that overlap in time.
- ``union`` (stopes): the fwd best of every source and the bwd best of every target, deduplicated, not
  one-to-one.

Unlike LASER (whose ``mine`` mode applies the threshold only in ``max``), every mode keeps scores STRICTLY
above ``threshold``. Determinism: a source whose candidates tie picks the lowest target row (fwd), a target
picks the lowest source row (bwd), and results are ordered by score descending, then source row, then target
row.

Scale. :func:`mine_from_neighbours` takes the forward kNN of every source but backward neighbourhoods only for
the target rows the caller chooses (a :class:`Backward` table), so a 1.6M-sentence database needs backward kNN
only where a mode uses it:

- ``fwd`` needs r_y of the candidate targets only (:func:`candidate_targets`): exact.
- ``intersect`` needs backward kNN of the candidate targets only: exact, because an intersect pair's target is
  always some source's fwd best.
- ``bwd`` and ``union`` take bwd candidates from every target that has a backward row; LASER considers every
  target, so they are exact only with backward kNN of all targets.
- ``max`` is exact (LASER's) with backward kNN of all targets. With candidate targets only it is an
  approximation: it never sees a bwd pair whose target no source ranks among its k nearest (such a pair has
  cos(x, y) <= x's k-th similarity, but can still score high when y's neighbourhood is sparse), and such a
  missed pair can no longer block a later one in the greedy pass.

:func:`mine_embeddings` does the whole job on two matrices, exactly like LASER for small inputs; with a
``search_fn`` (e.g. a sharded index) it reads ``y`` only at the rows whose backward kNN it needs. Where the
backward search is large (queries x sources x dim past ``miner.knn.IVF_MIN_WORK``) it searches an IVF index over
the sources (:mod:`miner.knn`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import numpy as np

from miner.knn import BACKWARD_INDEXES, SearchFn, backward_knn, check_k, knn
from miner.margin import Margin, knn_mean, margin_scores, parse_choice, parse_margin
from miner.mine_inputs import as_ids, check_threshold, check_unique_sorted, normalised, warn_nonpositive_means
from miner.pair_selection import Triple, best_per_row, concat_pairs, dedupe, greedy_one_to_one, keep_above

__all__ = [
    "Backward",
    "Mode",
    "SearchFn",
    "candidate_targets",
    "knn",
    "mine_embeddings",
    "mine_from_neighbours",
    "parse_mode",
]

logger = logging.getLogger(__name__)

Pair = tuple[float, int, int]


class Mode(str, Enum):
    """Retrieval mode (LASER's ``--retrieval`` plus stopes' ``union``)."""

    FWD = "fwd"
    BWD = "bwd"
    INTERSECT = "intersect"
    MAX = "max"
    UNION = "union"


def parse_mode(value: str | Mode) -> Mode:
    """Turn a name such as ``"max"`` into a :class:`Mode`.

    Raises:
        ValueError: unknown name; the message lists the choices.
    """
    return parse_choice(Mode, value, "mode")


# ----------------------------------------------------------------------------------------------------------
# Backward neighbourhoods of chosen target rows


@dataclass(frozen=True)
class Backward:
    """Backward neighbourhoods of some target rows (not necessarily all of a huge database).

    Attributes:
        ids: (q,) int64 target rows, sorted and unique.
        r_y: (q,) float64 mean cosine of each of those targets to its k nearest sources.
        sims: (q, k') float32 cosines to those nearest sources, best first, or None when only means are known
            (enough for ``fwd``).
        nbrs: (q, k') int64 source rows of those neighbours, or None together with ``sims``.
    """

    ids: np.ndarray
    r_y: np.ndarray
    sims: np.ndarray | None = None
    nbrs: np.ndarray | None = None

    @classmethod
    def from_knn(cls, ids: np.ndarray, sims: np.ndarray, nbrs: np.ndarray) -> Backward:
        """Build from the backward kNN of target rows ``ids`` (any order) against all sources.

        Args:
            ids: (q,) target rows.
            sims: (q, k') float32 similarities of ``y[ids]`` to their nearest sources, best first.
            nbrs: (q, k') int64 source rows of those neighbours.
        """
        ids = as_ids(ids, "backward ids")
        sims = np.asarray(sims, dtype=np.float32)
        nbrs = np.asarray(nbrs, dtype=np.int64)
        if sims.ndim != 2 or sims.shape != nbrs.shape or sims.shape[0] != ids.shape[0]:
            raise ValueError(
                f"backward sims and nbrs must both be ({ids.shape[0]}, k), got {sims.shape} and {nbrs.shape}"
            )
        if sims.shape[1] == 0:
            raise ValueError("backward kNN has no column: every target needs at least one source neighbour")
        if (nbrs < 0).any():
            raise ValueError("backward nbrs contain -1: drop padding columns (knn() does) before mining")
        order = np.argsort(ids, kind="stable")
        ids, sims, nbrs = ids[order], sims[order], nbrs[order]
        check_unique_sorted(ids)
        return cls(ids=ids, r_y=knn_mean(sims), sims=sims, nbrs=nbrs)

    @classmethod
    def from_means(cls, ids: np.ndarray, r_y: np.ndarray) -> Backward:
        """Build from precomputed neighbourhood means r_y of target rows ``ids`` (enough for ``fwd``)."""
        ids = as_ids(ids, "backward ids")
        r_y = np.asarray(r_y, dtype=np.float64)
        if r_y.shape != ids.shape:
            raise ValueError(f"r_y must have shape {ids.shape} like ids, got {r_y.shape}")
        order = np.argsort(ids, kind="stable")
        ids, r_y = ids[order], r_y[order]
        check_unique_sorted(ids)
        return cls(ids=ids, r_y=r_y)

    def positions(self, targets: np.ndarray) -> np.ndarray:
        """Rows of this table holding ``targets`` (any shape).

        Raises:
            ValueError: some target has no backward neighbourhood here; the message names a few.
        """
        targets = np.asarray(targets, dtype=np.int64)
        pos = np.searchsorted(self.ids, targets)
        pos_c = np.minimum(pos, max(len(self.ids) - 1, 0))
        if len(self.ids):
            found = (pos < len(self.ids)) & (self.ids[pos_c] == targets)
        else:
            found = np.zeros(pos.shape, dtype=bool)
        if not found.all():
            missing = np.unique(targets[~found])[:5].tolist()
            raise ValueError(
                f"target rows {missing} have no backward neighbourhood: compute the backward kNN of "
                "candidate_targets(fwd_nbrs) (or of all targets) and pass it as `backward`"
            )
        return pos_c


def candidate_targets(fwd_nbrs: np.ndarray) -> np.ndarray:
    """Sorted unique target rows that appear among the sources' forward neighbours.

    Args:
        fwd_nbrs: (n, k) int64 forward neighbour ids; -1 padding is ignored.

    Returns:
        (t,) int64 target rows whose backward neighbourhood ``fwd`` and ``intersect`` need.
    """
    ids = np.unique(np.asarray(fwd_nbrs, dtype=np.int64))
    return ids[ids >= 0]


# ----------------------------------------------------------------------------------------------------------
# Mining from precomputed neighbours


def mine_from_neighbours(
    fwd_sims: np.ndarray,
    fwd_nbrs: np.ndarray,
    backward: Backward,
    *,
    margin: str | Margin = Margin.RATIO,
    mode: str | Mode = Mode.MAX,
    threshold: float = 0.0,
    source_groups: np.ndarray | None = None,
    source_spans: np.ndarray | None = None,
) -> list[Pair]:
    """Score candidates and select pairs, given kNN results in both directions.

    Args:
        fwd_sims: (n, k') float32 cosines of every source to its k' nearest targets, best first. Its mean per
            row is r_x, so pass exactly the k neighbourhood columns.
        fwd_nbrs: (n, k') int64 target rows of those neighbours (no -1).
        backward: backward neighbourhoods of the target rows the mode needs (see the module docstring):
            r_y of every candidate target for ``fwd``; backward kNN (sims, nbrs) for the other modes.
        margin: ``ratio`` (default), ``distance`` or ``absolute``.
        mode: ``fwd``, ``bwd``, ``intersect``, ``max`` (default) or ``union``.
        threshold: keep pairs whose score is strictly greater.
        source_groups: (n,) int recording index of each source; only with ``mode="max"`` and with
            ``source_spans``: two accepted sources of one group never overlap in time.
        source_spans: (n, 2) float (start, end) seconds of each source, end >= start; touching ends do not
            overlap.

    Returns:
        (score, source_row, target_row) tuples, score descending, ties by source row then target row.

    Raises:
        ValueError: inconsistent shapes, -1 ids, a backward table that lacks a needed target or its kNN,
            groups/spans outside ``max`` mode or malformed.
    """
    start = time.perf_counter()
    m = parse_margin(margin)
    md = parse_mode(mode)
    threshold = check_threshold(threshold)
    fwd_sims = np.asarray(fwd_sims, dtype=np.float32)
    fwd_nbrs = np.asarray(fwd_nbrs, dtype=np.int64)
    if fwd_sims.ndim != 2 or fwd_sims.shape != fwd_nbrs.shape:
        raise ValueError(
            f"fwd_sims and fwd_nbrs must both be (n, k), got {fwd_sims.shape} and {fwd_nbrs.shape}"
        )
    n = fwd_sims.shape[0]
    if n and fwd_sims.shape[1] == 0:
        raise ValueError("fwd_sims has no column: every source needs at least one target neighbour")
    if (fwd_nbrs < 0).any():
        raise ValueError("fwd_nbrs contain -1: drop padding columns (knn() does) before mining")
    groups_spans = _check_groups(source_groups, source_spans, n, md)
    if n == 0:
        return []
    r_x = knn_mean(fwd_sims)

    if md is Mode.FWD:
        pairs = keep_above(_fwd_bests(fwd_sims, fwd_nbrs, r_x, backward, m), threshold)
    elif md is Mode.BWD:
        pairs = keep_above(_bwd_bests(r_x, backward, m), threshold)
    elif md is Mode.INTERSECT:
        f_score, f_src, f_trg = _fwd_bests(fwd_sims, fwd_nbrs, r_x, backward, m)
        b_best_src = _bwd_bests(r_x, backward, m)[1][backward.positions(f_trg)]
        mutual = b_best_src == f_src
        pairs = keep_above((f_score[mutual], f_src[mutual], f_trg[mutual]), threshold)
    else:  # union and max pool the fwd best of every source with the bwd best of every target
        fwd = _fwd_bests(fwd_sims, fwd_nbrs, r_x, backward, m)
        bwd = _bwd_bests(r_x, backward, m)
        pooled = keep_above(concat_pairs(fwd, bwd), threshold)
        pairs = dedupe(pooled) if md is Mode.UNION else greedy_one_to_one(pooled, groups_spans)
    out = [(float(s), int(i), int(j)) for s, i, j in zip(*pairs, strict=True)]
    logger.info(
        "mined %d pairs from %d sources, %d backward targets (mode=%s, margin=%s, threshold=%g) in %.2fs",
        len(out), n, len(backward.ids), md.value, m.value, threshold, time.perf_counter() - start,
    )  # fmt: skip
    return out


def _fwd_bests(
    fwd_sims: np.ndarray, fwd_nbrs: np.ndarray, r_x: np.ndarray, backward: Backward, margin: Margin
) -> Triple:
    """(score, source, target) of every source's best forward candidate."""
    r_y = backward.r_y[backward.positions(fwd_nbrs)]
    if margin is Margin.RATIO:
        warn_nonpositive_means(r_x, r_y)
    scores = margin_scores(fwd_sims, r_x[:, None], r_y, margin)
    best_score, best_trg = best_per_row(scores, fwd_nbrs)
    return best_score, np.arange(len(r_x), dtype=np.int64), best_trg


def _bwd_bests(r_x: np.ndarray, backward: Backward, margin: Margin) -> Triple:
    """(score, source, target) of the best backward candidate of every target in ``backward``."""
    if backward.sims is None or backward.nbrs is None:
        raise ValueError("this mode needs backward kNN (Backward.from_knn), not only means")
    if backward.nbrs.size and backward.nbrs.max() >= len(r_x):
        raise ValueError(f"backward nbrs name source rows >= {len(r_x)}, the number of sources")
    scores = margin_scores(backward.sims, r_x[backward.nbrs], backward.r_y[:, None], margin)
    best_score, best_src = best_per_row(scores, backward.nbrs)
    return best_score, best_src, backward.ids


# ----------------------------------------------------------------------------------------------------------
# Public entry point on two matrices


def mine_embeddings(
    x: np.ndarray,
    y: np.ndarray,
    k: int = 4,
    margin: str | Margin = "ratio",
    mode: str | Mode = "max",
    threshold: float = 0.0,
    *,
    search_fn: SearchFn | None = None,
    backward_targets: Literal["candidates", "all"] | None = None,
    source_groups: np.ndarray | None = None,
    source_spans: np.ndarray | None = None,
    batch_size: int = 65536,
    backward_index: str = "auto",
) -> list[Pair]:
    """Mine pairs between source embeddings ``x`` and target embeddings ``y``.

    Args:
        x: (n, d) source embeddings (float; rows are L2-normalised here, copies are made).
        y: (m, d) target embeddings. With ``search_fn`` it may be a memory map: only the rows whose backward
            kNN is needed are read (and normalised).
        k: neighbourhood size (>= 1); each side uses min(k, its size).
        margin: ``ratio`` (default), ``distance`` or ``absolute``.
        mode: ``max`` (default), ``fwd``, ``bwd``, ``intersect`` or ``union``.
        threshold: keep scores strictly above it.
        search_fn: forward search over the (normalised) targets held elsewhere, e.g. a sharded index merged
            with global row ids; default an exact ``faiss.IndexFlatIP`` over ``y``.
        backward_targets: which targets get a backward kNN against ``x``. ``None`` picks the exact choice:
            the candidate targets for ``fwd`` / ``intersect``, all targets otherwise. ``"candidates"`` for
            ``max`` / ``bwd`` / ``union`` trades exactness for speed on a huge database (module docstring).
        source_groups: (n,) int recording index per source (``max`` only, with ``source_spans``).
        source_spans: (n, 2) float (start, end) seconds per source; accepted sources of one group never
            overlap.
        batch_size: target rows per backward search batch.
        backward_index: the index over ``x`` that backward kNN searches: ``flat`` (exact), ``ivf``
            (approximate, for very many sources) or ``auto`` (IVF only for a large search); see
            :func:`miner.knn.source_index`.

    Returns:
        (score, source_row, target_row) tuples, score descending, ties by source row then target row.

    Raises:
        ValueError: bad k, margin, mode, threshold or backward_targets; dims that differ; non-finite values;
            all-zero rows (which have no direction).
    """
    start = time.perf_counter()
    check_k(k)
    k = int(k)
    m = parse_margin(margin)
    md = parse_mode(mode)
    threshold = check_threshold(threshold)
    if backward_targets not in (None, "candidates", "all"):
        raise ValueError(f"backward_targets must be None, 'candidates' or 'all', got {backward_targets!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if backward_index not in BACKWARD_INDEXES:
        raise ValueError(f"backward_index {backward_index!r}: use one of {', '.join(BACKWARD_INDEXES)}")
    x = normalised(x, "x")
    if getattr(y, "ndim", None) != 2 or y.shape[1] != x.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension: x is {x.shape}, y is {getattr(y, 'shape', type(y))}"
        )
    if search_fn is None:
        y = normalised(y, "y")
    n, n_targets = x.shape[0], y.shape[0]
    _check_groups(source_groups, source_spans, n, md)
    if n == 0 or n_targets == 0:
        logger.warning("nothing to mine: %d sources, %d targets", n, n_targets)
        return []

    fwd_sims, fwd_nbrs = knn(x, y, k) if search_fn is None else knn(x, k=k, search_fn=search_fn)
    if fwd_nbrs.size and fwd_nbrs.max() >= n_targets:
        raise ValueError(f"search_fn returned target ids >= {n_targets}, the number of rows of y")
    t_fwd = time.perf_counter()
    scope = backward_targets or ("candidates" if md in (Mode.FWD, Mode.INTERSECT) else "all")
    ids = candidate_targets(fwd_nbrs) if scope == "candidates" else np.arange(n_targets, dtype=np.int64)
    backward = Backward.from_knn(
        ids,
        *backward_knn(
            x, y, ids, k, batch_size, normalise=search_fn is not None, backward_index=backward_index
        ),
    )
    t_bwd = time.perf_counter()
    pairs = mine_from_neighbours(
        fwd_sims,
        fwd_nbrs,
        backward,
        margin=m,
        mode=md,
        threshold=threshold,
        source_groups=source_groups,
        source_spans=source_spans,
    )
    logger.info(
        "mine_embeddings: %d x %d, k=%d: forward kNN %.2fs, backward kNN of %d targets %.2fs, total %.2fs",
        n, n_targets, k, t_fwd - start, len(ids), t_bwd - t_fwd, time.perf_counter() - start,
    )  # fmt: skip
    return pairs


def _check_groups(
    groups: np.ndarray | None, spans: np.ndarray | None, n: int, mode: Mode
) -> tuple[np.ndarray, np.ndarray] | None:
    """Validate the time-overlap constraint; returns (groups (n,) int64, spans (n, 2) float64) or None."""
    if groups is None and spans is None:
        return None
    if groups is None or spans is None:
        raise ValueError("pass source_groups and source_spans together (recording index and (start, end))")
    if mode is not Mode.MAX:
        raise ValueError(
            f"source_groups/source_spans apply to mode 'max' only (one-to-one), got {mode.value!r}"
        )
    groups = np.asarray(groups)
    if groups.shape != (n,) or not (np.issubdtype(groups.dtype, np.integer) or n == 0):
        raise ValueError(
            f"source_groups must be ({n},) integers, got shape {groups.shape} dtype {groups.dtype}"
        )
    spans = np.asarray(spans, dtype=np.float64)
    if spans.shape != (n, 2):
        raise ValueError(f"source_spans must be ({n}, 2) (start, end), got shape {spans.shape}")
    if not np.isfinite(spans).all():
        raise ValueError("source_spans contain NaN or inf")
    bad = np.flatnonzero(spans[:, 1] < spans[:, 0])
    if bad.size:
        raise ValueError(f"source_spans rows {bad[:5].tolist()} end before they start")
    return groups.astype(np.int64), spans
