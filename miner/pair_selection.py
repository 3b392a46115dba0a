"""Which candidate pairs a mining mode keeps: best per row, threshold, de-duplication, LASER's greedy one-to-one
pass (with the no-overlap rule for sources of one recording). Pairs travel as a :data:`Triple` of arrays."""

from __future__ import annotations

import bisect

import numpy as np

__all__ = ["Triple", "best_per_row", "concat_pairs", "dedupe", "greedy_one_to_one", "keep_above"]

Triple = tuple[np.ndarray, np.ndarray, np.ndarray]  # (scores, source rows, target rows) of candidate pairs


def concat_pairs(a: Triple, b: Triple) -> Triple:
    return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), np.concatenate([a[2], b[2]])


def best_per_row(scores: np.ndarray, nbrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best score of each row and its neighbour id; ties go to the lowest id, NaN never wins."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    best = s.max(axis=1)
    tied = s == best[:, None]
    big = np.iinfo(np.int64).max
    return best, np.where(tied, nbrs, big).min(axis=1)


def _order(score: np.ndarray, src: np.ndarray, trg: np.ndarray) -> np.ndarray:
    return np.lexsort((trg, src, -score))


def keep_above(pairs: Triple, threshold: float) -> Triple:
    """Pairs with score > threshold (NaN dropped), ordered score desc, then source, then target."""
    score, src, trg = pairs
    keep = score > threshold
    score, src, trg = score[keep], src[keep], trg[keep]
    o = _order(score, src, trg)
    return score[o], src[o], trg[o]


def dedupe(pairs: Triple) -> Triple:
    """Keep the first (best) occurrence of each (source, target) of ordered pairs."""
    score, src, trg = pairs
    if len(score) == 0:
        return pairs
    _, first = np.unique(np.stack([src, trg], axis=1), axis=0, return_index=True)
    first = np.sort(first)
    return score[first], src[first], trg[first]


def greedy_one_to_one(
    pairs: Triple,
    groups_spans: tuple[np.ndarray, np.ndarray] | None,
) -> Triple:
    """LASER's max: walk ordered pairs, accept one whose source and target are both unused (and, with groups,
    whose span overlaps no accepted span of its group)."""
    score, src, trg = pairs
    used_src: set[int] = set()
    used_trg: set[int] = set()
    accepted: dict[int, list[tuple[float, float]]] = {}  # group -> accepted (start, end), sorted
    group_list: list[int] | None = None
    span_list: list[list[float]] = []
    if groups_spans is not None:
        group_list, span_list = groups_spans[0].tolist(), groups_spans[1].tolist()
    keep = []
    for idx, (i, j) in enumerate(zip(src.tolist(), trg.tolist(), strict=True)):
        if i in used_src or j in used_trg:
            continue
        if group_list is not None:
            s, e = span_list[i]
            intervals = accepted.setdefault(group_list[i], [])
            if _overlaps_any(intervals, s, e):
                continue
            bisect.insort(intervals, (s, e))
        used_src.add(i)
        used_trg.add(j)
        keep.append(idx)
    keep_a = np.asarray(keep, dtype=np.int64)
    return score[keep_a], src[keep_a], trg[keep_a]


def _overlaps_any(intervals: list[tuple[float, float]], s: float, e: float) -> bool:
    """Whether [s, e] overlaps (a < e and s < b) some interval of a sorted, pairwise non-overlapping list.

    Sorted by (start, end), such a list also has non-decreasing ends, so among the intervals that start before
    ``e`` the last one ends latest: one comparison after a binary search.
    """
    p = bisect.bisect_left(intervals, (e, -np.inf))
    return p > 0 and intervals[p - 1][1] > s
