"""Mining maths (miner.mine): hand-computed similarity matrices for every margin and mode, one-to-one, the
time overlap rule and candidate-target scoping. kNN, shard invariance, planted pairs, the brute-force LASER
oracle and argument checks: tests/test_mine_oracle.py.

Hand-made matrices are written in sixteenths (integers / 16): every similarity, neighbourhood mean and
distance margin is then exact in floating point, so ties and "score == threshold" are exact too. Ratio scores
are unit-free: cos / ((r_x + r_y) / 2) with everything in sixteenths.
"""

from __future__ import annotations

import numpy as np
import pytest

from miner.mine import Backward, candidate_targets, knn, mine_embeddings, mine_from_neighbours

ALL = -1e9  # a threshold that keeps every score, to see the modes' full selections

# ----------------------------------------------------------------------------------------------------------
# helpers


def neighbours(s16: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray, Backward]:
    """Exact kNN both ways of a similarity matrix given in sixteenths; kNN ties go to the lower index."""
    s = np.asarray(s16, dtype=np.float32) / 16
    n, m = s.shape

    def topk(mat: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        cols = np.broadcast_to(np.arange(mat.shape[1]), mat.shape)
        order = np.lexsort((cols, -mat), axis=1)[:, :kk]
        return np.take_along_axis(mat, order, axis=1), order.astype(np.int64)

    fs, fi = topk(s, min(k, m))
    bs, bi = topk(s.T, min(k, n))
    return fs, fi, Backward.from_knn(np.arange(m), bs, bi)


def mine_matrix(s16: list[list[int]], k: int, margin: str, mode: str, threshold: float = ALL, **kw):
    fs, fi, bwd = neighbours(s16, k)
    return mine_from_neighbours(fs, fi, bwd, margin=margin, mode=mode, threshold=threshold, **kw)


def approx_pairs(expected: list[tuple[float, int, int]]) -> list:
    return [(pytest.approx(s, rel=1e-6), i, j) for s, i, j in expected]


def unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# 3 x 3 with a hub target: y0 is close to every source, so the margins disagree.
#
#            y0  y1  y2          k = 2 (sixteenths)
#   x0  [    14, 13,  0 ]        r_x0 = (14 + 13) / 2 = 13.5   candidates y0, y1
#   x1  [    13,  2, 11 ]        r_x1 = (13 + 11) / 2 = 12     candidates y0, y2
#   x2  [    13,  2, 10 ]        r_x2 = (13 + 10) / 2 = 11.5   candidates y0, y2
#   r_y0 = (14 + 13) / 2 = 13.5 (sources x0, then x1: the tie 13/13 with x2 goes to the lower row)
#   r_y1 = (13 +  2) / 2 = 7.5  (x0, then x1 by the same tie rule)
#   r_y2 = (11 + 10) / 2 = 10.5 (x1, x2)
#
# ratio = cos / ((r_x + r_y) / 2):
#   x0y0 14 / 13.5 = 1.037037   x0y1 13 / 10.5  = 1.238095  -> fwd x0: y1
#   x1y0 13 / 12.75 = 1.019608  x1y2 11 / 11.25 = 0.977778  -> fwd x1: y0
#   x2y0 13 / 12.5 = 1.04       x2y2 10 / 11    = 0.909091  -> fwd x2: y0
#   x1y1 2 / 9.75 = 0.205128 (y1's second backward candidate)
#   bwd: y0 {x0 1.037037, x1 1.019608} -> x0; y1 {x0 1.238095, x1 0.205128} -> x0;
#        y2 {x1 0.977778, x2 0.909091} -> x1
S3 = [[14, 13, 0], [13, 2, 11], [13, 2, 10]]
R_01, R_20, R_00, R_10, R_12 = 13 / 10.5, 13 / 12.5, 14 / 13.5, 13 / 12.75, 11 / 11.25

EXPECTED_S3_RATIO = {
    "fwd": [(R_01, 0, 1), (R_20, 2, 0), (R_10, 1, 0)],
    "bwd": [(R_01, 0, 1), (R_00, 0, 0), (R_12, 1, 2)],
    # fwd pairs whose target's bwd best is that source: only (0, 1); y0's bwd best is x0, not x1 or x2
    "intersect": [(R_01, 0, 1)],
    # pool sorted: (0,1) 1.238 accept, (2,0) 1.04 accept, (0,0) 1.037 x0 used, (1,0) 1.0196 y0 used,
    # (1,2) 0.978 accept
    "max": [(R_01, 0, 1), (R_20, 2, 0), (R_12, 1, 2)],
    # every fwd and bwd best once, not one-to-one
    "union": [(R_01, 0, 1), (R_20, 2, 0), (R_00, 0, 0), (R_10, 1, 0), (R_12, 1, 2)],
}


@pytest.mark.parametrize("mode", ["fwd", "bwd", "intersect", "max", "union"])
def test_3x3_ratio_every_mode(mode: str) -> None:
    assert mine_matrix(S3, 2, "ratio", mode) == approx_pairs(EXPECTED_S3_RATIO[mode])


# absolute = cos: every source's best is the hub y0 (14, 13, 13); ties in the output go by source row.
#   bwd: y0 -> x0 (14), y1 -> x0 (13), y2 -> x1 (11)
#   max pool: (0,0) .875 accept; .8125: (0,1) x0 used, (1,0) y0 used, (2,0) y0 used; (1,2) .6875 accept
EXPECTED_S3_ABSOLUTE = {
    "fwd": [(14 / 16, 0, 0), (13 / 16, 1, 0), (13 / 16, 2, 0)],
    "bwd": [(14 / 16, 0, 0), (13 / 16, 0, 1), (11 / 16, 1, 2)],
    "intersect": [(14 / 16, 0, 0)],
    "max": [(14 / 16, 0, 0), (11 / 16, 1, 2)],
    "union": [(14 / 16, 0, 0), (13 / 16, 0, 1), (13 / 16, 1, 0), (13 / 16, 2, 0), (11 / 16, 1, 2)],
}

# distance = cos - (r_x + r_y) / 2, in sixteenths:
#   x0y0 14 - 13.5 = 0.5    x0y1 13 - 10.5  = 2.5    -> fwd x0: y1 (2.5)
#   x1y0 13 - 12.75 = 0.25  x1y2 11 - 11.25 = -0.25  -> fwd x1: y0 (0.25)
#   x2y0 13 - 12.5 = 0.5    x2y2 10 - 11    = -1     -> fwd x2: y0 (0.5)
#   bwd: y0 {x0 0.5, x1 0.25} -> x0; y1 {x0 2.5, x1 2 - 9.75} -> x0; y2 {x1 -0.25, x2 -1} -> x1
#   max pool: (0,1) 2.5 accept; 0.5 ties by source: (0,0) x0 used, (2,0) accept; (1,0) 0.25 y0 used;
#   (1,2) -0.25 accept (threshold ALL)
EXPECTED_S3_DISTANCE = {
    "fwd": [(2.5 / 16, 0, 1), (0.5 / 16, 2, 0), (0.25 / 16, 1, 0)],
    "bwd": [(2.5 / 16, 0, 1), (0.5 / 16, 0, 0), (-0.25 / 16, 1, 2)],
    "intersect": [(2.5 / 16, 0, 1)],
    "max": [(2.5 / 16, 0, 1), (0.5 / 16, 2, 0), (-0.25 / 16, 1, 2)],
    "union": [(2.5 / 16, 0, 1), (0.5 / 16, 0, 0), (0.5 / 16, 2, 0), (0.25 / 16, 1, 0), (-0.25 / 16, 1, 2)],
}


@pytest.mark.parametrize("mode", ["fwd", "bwd", "intersect", "max", "union"])
def test_3x3_absolute_every_mode(mode: str) -> None:
    assert mine_matrix(S3, 2, "absolute", mode) == EXPECTED_S3_ABSOLUTE[mode]  # exact: sixteenths


@pytest.mark.parametrize("mode", ["fwd", "bwd", "intersect", "max", "union"])
def test_3x3_distance_every_mode(mode: str) -> None:
    assert mine_matrix(S3, 2, "distance", mode) == EXPECTED_S3_DISTANCE[mode]  # exact: sixteenths


def test_3x3_default_threshold_zero_drops_negative_distance() -> None:
    # max with the default threshold 0: (1, 2) scores -0.25/16 and goes.
    fs, fi, bwd = neighbours(S3, 2)
    assert mine_from_neighbours(fs, fi, bwd, margin="distance", mode="max") == [
        (2.5 / 16, 0, 1),
        (0.5 / 16, 2, 0),
    ]


@pytest.mark.parametrize(
    ("margin", "mode", "threshold", "expected"),
    [
        # x2y0 scores 13 / 12.5 = 1.04 exactly as the float 1.04: equal to the threshold, so dropped
        ("ratio", "fwd", 1.04, [(R_01, 0, 1)]),
        ("ratio", "fwd", np.nextafter(1.04, 0), [(R_01, 0, 1), (R_20, 2, 0)]),
        ("absolute", "bwd", 13 / 16, [(14 / 16, 0, 0)]),
        ("absolute", "union", 11 / 16, [(14 / 16, 0, 0), (13 / 16, 0, 1), (13 / 16, 1, 0), (13 / 16, 2, 0)]),
        ("distance", "max", 0.5 / 16, [(2.5 / 16, 0, 1)]),
        ("distance", "intersect", 2.5 / 16, []),
    ],
)
def test_threshold_is_strict(margin: str, mode: str, threshold: float, expected: list) -> None:
    assert mine_matrix(S3, 2, margin, mode, threshold) == approx_pairs(expected)


# ----------------------------------------------------------------------------------------------------------
# 4 x 5, k = 2: a fwd tie, a kNN tie, a target that two directions disagree on.
#
#            y0  y1  y2  y3  y4
#   x0  [    12, 12,  4,  0,  8 ]   top-2 y0, y1 (12, 12)   r_x0 = 12
#   x1  [     4,  8, 12,  4,  0 ]   top-2 y2, y1 (12, 8)    r_x1 = 10
#   x2  [     0,  4,  8, 12,  4 ]   top-2 y3, y2 (12, 8)    r_x2 = 10
#   x3  [     8,  0,  4,  8, 12 ]   top-2 y4, then y0 (8 ties with y3: lower row)   r_x3 = 10
#   columns: y0 x0 12, x3 8; y1 x0 12, x1 8; y2 x1 12, x2 8; y3 x2 12, x3 8; y4 x3 12, x0 8: every r_y = 10
#
# ratio: x0y0 = x0y1 = 12 / 11 (a tie: fwd x0 takes the lower target y0); x1y2 = x2y3 = x3y4 = 12 / 10 = 1.2;
#   x1y1 = x2y2 = x3y0 = 8 / 10; x0y4 = 8 / 11.
#   bwd: y0 {x0 12/11, x3 0.8} -> x0; y1 {x0 12/11, x1 0.8} -> x0; y2 -> x1; y3 -> x2;
#        y4 {x3 1.2, x0 8/11} -> x3
S45 = [[12, 12, 4, 0, 8], [4, 8, 12, 4, 0], [0, 4, 8, 12, 4], [8, 0, 4, 8, 12]]
DIAG = [(1.2, 1, 2), (1.2, 2, 3), (1.2, 3, 4)]
EXPECTED_S45_RATIO = {
    "fwd": [*DIAG, (12 / 11, 0, 0)],
    "bwd": [*DIAG, (12 / 11, 0, 0), (12 / 11, 0, 1)],
    "intersect": [*DIAG, (12 / 11, 0, 0)],
    "max": [*DIAG, (12 / 11, 0, 0)],  # (0, 1) comes after (0, 0) (tie, lower target first) and x0 is used
    "union": [*DIAG, (12 / 11, 0, 0), (12 / 11, 0, 1)],
}


@pytest.mark.parametrize("mode", ["fwd", "bwd", "intersect", "max", "union"])
def test_4x5_ratio_every_mode(mode: str) -> None:
    assert mine_matrix(S45, 2, "ratio", mode) == approx_pairs(EXPECTED_S45_RATIO[mode])


def test_4x5_absolute_k3() -> None:
    # k = 3 changes the means but absolute ignores them: fwd bests are x0 -> y0 (12 ties y1: lower target),
    # x1 -> y2, x2 -> y3, x3 -> y4. bwd: y0 -> x0, y1 -> x0, y2 -> x1, y3 -> x2, y4 -> x3.
    expected = [(0.75, 0, 0), (0.75, 1, 2), (0.75, 2, 3), (0.75, 3, 4)]
    assert mine_matrix(S45, 3, "absolute", "max") == expected
    assert mine_matrix(S45, 3, "absolute", "union") == [(0.75, 0, 0), (0.75, 0, 1), *expected[1:]]


def test_ties_in_bwd_go_to_the_lower_source_and_max_is_one_to_one() -> None:
    # two identical sources, one target, k = 1: r_x0 = r_x1 = 8, r_y0 = 8, every score 8 / 8 = 1.
    s = [[8], [8]]
    assert mine_matrix(s, 1, "ratio", "fwd") == [(1.0, 0, 0), (1.0, 1, 0)]
    assert mine_matrix(s, 1, "ratio", "bwd") == [(1.0, 0, 0)]  # tie -> lower source row
    assert mine_matrix(s, 1, "ratio", "max") == [(1.0, 0, 0)]  # y0 used once
    assert mine_matrix(s, 1, "ratio", "intersect") == [(1.0, 0, 0)]
    assert mine_matrix(s, 1, "ratio", "union") == [(1.0, 0, 0), (1.0, 1, 0)]
    assert mine_matrix(s, 1, "ratio", "max", threshold=1.0) == []  # strict


def test_k_larger_than_either_side() -> None:
    # 2 sources, 1 target, k = 4: fwd uses min(4, 1) = 1 neighbour, bwd min(4, 2) = 2.
    # r_x0 = 12, r_x1 = 4, r_y0 = (12 + 4) / 2 = 8 (sixteenths).
    # x0y0 = 12 / ((12 + 8) / 2) = 1.2 ; x1y0 = 4 / ((4 + 8) / 2) = 2 / 3. bwd y0 -> x0.
    assert mine_matrix([[12], [4]], 4, "ratio", "fwd") == approx_pairs([(1.2, 0, 0), (2 / 3, 1, 0)])
    assert mine_matrix([[12], [4]], 4, "ratio", "max") == approx_pairs([(1.2, 0, 0)])
    # the same through mine_embeddings on vectors with these cosines (0.75 and 0.25 to y0)
    y = np.array([[1.0, 0.0]], np.float32)
    x = np.array([[0.75, np.sqrt(1 - 0.75**2)], [0.25, np.sqrt(1 - 0.25**2)]], np.float32)
    got = mine_embeddings(x, y, k=4, mode="fwd", threshold=0.0)
    assert [(i, j) for _, i, j in got] == [(0, 0), (1, 0)]
    np.testing.assert_allclose([s for s, _, _ in got], [1.2, 2 / 3], rtol=1e-5)


def test_3x3_through_mine_embeddings_on_constructed_vectors() -> None:
    # x_i = e_i, y_j = (S3[:, j] / 32, sqrt(1 - |.|^2)) in 4-d: x @ y.T = S3 / 2. The ratio margin is
    # scale-free, so the ratio results equal the hand-derived ones; each column's norm stays below 1.
    s = np.asarray(S3, np.float64) / 32
    x = np.eye(3, 4, dtype=np.float32)
    y = np.concatenate([s.T, np.sqrt(1 - (s.T**2).sum(axis=1, keepdims=True))], axis=1).astype(np.float32)
    for mode, expected in EXPECTED_S3_RATIO.items():
        got = mine_embeddings(x, y, k=2, mode=mode, threshold=ALL)
        assert [(i, j) for _, i, j in got] == [(i, j) for _, i, j in expected], mode
        np.testing.assert_allclose([g[0] for g in got], [e[0] for e in expected], rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Time overlap rule in max mode
#
#            y0  y1  y2          absolute margin, k = 1: each source's only candidate is its top target
#   x0  [    15,  1,  0 ]        fwd: x0 -> y0 (15), x1 -> y1 (14), x2 -> y2 (13), x3 -> y1 (12)
#   x1  [     1, 14,  2 ]        bwd: y0 -> x0, y1 -> x1, y2 -> x2
#   x2  [     0,  2, 13 ]        spans: x0 [0, 5], x1 [4, 8], x2 [5, 9] in recording 0;
#   x3  [     0, 12,  0 ]               x3 [4, 8] in recording 1
# Without the rule: (0,0) 15, (1,1) 14, (2,2) 13; (3,1) loses y1 to x1.
# With it: (0,0) accept; (1,1) overlaps x0 (4 < 5): reject, y1 stays free; (2,2) touches x0 at 5 (allowed) and
# x1 was not accepted: accept; (3,1) is another recording: accept.
S_OVERLAP = [[15, 1, 0], [1, 14, 2], [0, 2, 13], [0, 12, 0]]
GROUPS = np.array([0, 0, 0, 1])
SPANS = np.array([[0.0, 5.0], [4.0, 8.0], [5.0, 9.0], [4.0, 8.0]])


def test_max_forbids_overlapping_sources_of_one_recording() -> None:
    plain = mine_matrix(S_OVERLAP, 1, "absolute", "max")
    assert plain == [(15 / 16, 0, 0), (14 / 16, 1, 1), (13 / 16, 2, 2)]
    ruled = mine_matrix(S_OVERLAP, 1, "absolute", "max", source_groups=GROUPS, source_spans=SPANS)
    assert ruled == [(15 / 16, 0, 0), (13 / 16, 2, 2), (12 / 16, 3, 1)]
    # all in one recording: x3 [4, 8] overlaps x0 [0, 5] too, so y1 stays unmatched
    one = mine_matrix(S_OVERLAP, 1, "absolute", "max", source_groups=np.zeros(4, int), source_spans=SPANS)
    assert one == [(15 / 16, 0, 0), (13 / 16, 2, 2)]


def _naive_greedy(pairs, groups, spans):
    used_s, used_t, acc = set(), set(), []
    for _s, i, j in pairs:
        if i in used_s or j in used_t:
            continue
        if any(
            groups[a] == groups[i] and spans[a][0] < spans[i][1] and spans[i][0] < spans[a][1] for a in acc
        ):
            continue
        used_s.add(i), used_t.add(j), acc.append(i)
    return acc


def test_overlap_rule_matches_a_naive_quadratic_check_on_random_spans() -> None:
    rng = np.random.default_rng(3)
    n, m = 60, 40
    groups = rng.integers(0, 3, n)
    starts = rng.integers(0, 40, n).astype(float)
    spans = np.stack([starts, starts + rng.integers(0, 8, n)], axis=1)  # some zero-length spans too
    fs, fi, bwd = neighbours(rng.integers(0, 17, (n, m)).tolist(), 3)
    got = mine_from_neighbours(
        fs, fi, bwd, mode="max", threshold=ALL, source_groups=groups, source_spans=spans
    )
    pool = mine_from_neighbours(fs, fi, bwd, mode="union", threshold=ALL)  # the same candidates, ordered
    assert [i for _, i, _ in got] == _naive_greedy(pool, groups, spans)
    for a, (_, i, _) in enumerate(got):  # accepted spans of one recording never overlap
        for _, i2, _ in got[a + 1 :]:
            assert groups[i] != groups[i2] or not (spans[i][0] < spans[i2][1] and spans[i2][0] < spans[i][1])


def test_overlap_arguments_are_validated() -> None:
    fs, fi, bwd = neighbours(S_OVERLAP, 1)
    with pytest.raises(ValueError, match="together"):
        mine_from_neighbours(fs, fi, bwd, source_groups=GROUPS)
    with pytest.raises(ValueError, match="mode 'max' only"):
        mine_from_neighbours(fs, fi, bwd, mode="union", source_groups=GROUPS, source_spans=SPANS)
    with pytest.raises(ValueError, match=r"rows \[1\] end before they start"):
        bad = SPANS.copy()
        bad[1] = [8.0, 4.0]
        mine_from_neighbours(fs, fi, bwd, source_groups=GROUPS, source_spans=bad)
    with pytest.raises(ValueError, match=r"source_spans must be \(4, 2\)"):
        mine_from_neighbours(fs, fi, bwd, source_groups=GROUPS, source_spans=SPANS[:3])


# ----------------------------------------------------------------------------------------------------------
# Backward neighbourhoods of chosen target rows only


def test_fwd_needs_only_means_of_candidate_targets() -> None:
    fs, fi, full = neighbours(S45, 2)
    ids = candidate_targets(fi)
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 4])
    only_means = Backward.from_means(ids[::-1], full.r_y[ids][::-1])  # any order
    assert mine_from_neighbours(fs, fi, only_means, mode="fwd", threshold=ALL) == approx_pairs(
        EXPECTED_S45_RATIO["fwd"]
    )
    with pytest.raises(ValueError, match="needs backward kNN"):
        mine_from_neighbours(fs, fi, only_means, mode="max")
    partial = Backward.from_knn(full.ids[:3], full.sims[:3], full.nbrs[:3])
    with pytest.raises(ValueError, match=r"target rows \[3, 4\] have no backward neighbourhood"):
        mine_from_neighbours(fs, fi, partial, mode="fwd")


def test_intersect_is_exact_with_candidate_targets_only() -> None:
    # S3 with k = 1: every source's only candidate is y0, so y1 and y2 need no backward kNN for intersect.
    fs, fi, full = neighbours(S3, 1)
    ids = candidate_targets(fi)
    np.testing.assert_array_equal(ids, [0])
    sub = Backward.from_knn(ids, full.sims[ids], full.nbrs[ids])
    assert mine_from_neighbours(fs, fi, sub, mode="intersect", threshold=ALL) == mine_from_neighbours(
        fs, fi, full, mode="intersect", threshold=ALL
    )


def test_candidates_only_reads_only_those_rows_of_y() -> None:
    rng = np.random.default_rng(7)
    x, y = unit_rows(rng.standard_normal((20, 8))), unit_rows(rng.standard_normal((300, 8)))

    class Recorder:  # a stand-in for a memory-mapped 1.6M-row matrix: records which rows are read
        def __init__(self, a: np.ndarray) -> None:
            self.a, self.ndim, self.shape, self.read = a, a.ndim, a.shape, []

        def __getitem__(self, rows: np.ndarray) -> np.ndarray:
            self.read.extend(np.asarray(rows).tolist())
            return self.a[rows]

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return knn(q, y, k)

    rec = Recorder(y)
    for mode in ("fwd", "intersect"):
        rec.read.clear()
        got = mine_embeddings(x, rec, k=3, mode=mode, threshold=ALL, search_fn=search)
        assert got == mine_embeddings(x, y, k=3, mode=mode, threshold=ALL)
        assert sorted(rec.read) == candidate_targets(knn(x, y, 3)[1]).tolist()
    rec.read.clear()
    mine_embeddings(x, rec, k=3, mode="max", search_fn=search)  # exact max: every target
    assert sorted(rec.read) == list(range(300))
