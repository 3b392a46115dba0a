"""Mining maths on random data (miner.mine): kNN against brute force, shard invariance, planted pairs, a
brute-force LASER oracle for every margin and mode, and argument checks. Hand-computed matrices:
tests/test_mine.py."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from miner.mine import knn, mine_embeddings

ALL = -1e9  # a threshold that keeps every score, to see the modes' full selections


def unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# kNN, sharding


def test_knn_matches_brute_force_and_clips_k() -> None:
    rng = np.random.default_rng(0)
    x, y = unit_rows(rng.standard_normal((10, 6))), unit_rows(rng.standard_normal((7, 6)))
    sims, ids = knn(x, y, 3)
    full = x @ y.T
    np.testing.assert_array_equal(ids, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :3], rtol=1e-5)
    assert sims.dtype == np.float32 and ids.dtype == np.int64
    assert knn(x, y, 50)[0].shape == (10, 7)


def sharded_search(y: np.ndarray, n_shards: int = 3):
    """A search over y split into shards, merged with global ids (what a ShardedIndex does)."""
    bounds = np.linspace(0, len(y), n_shards + 1).astype(int).tolist()
    shards = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        index = faiss.IndexFlatIP(y.shape[1])
        index.add(y[lo:hi])
        shards.append((lo, hi, index))

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = [], []
        for lo, hi, index in shards:
            s, i = index.search(q, min(k, hi - lo))
            sims.append(s), ids.append(i + lo)
        sims, ids = np.concatenate(sims, axis=1), np.concatenate(ids, axis=1)
        order = np.lexsort((ids, -sims), axis=1)[:, :k]
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)  # pad like faiss when all shards hold fewer than k
        out_s[:, : order.shape[1]] = np.take_along_axis(sims, order, 1)
        out_i[:, : order.shape[1]] = np.take_along_axis(ids, order, 1)
        return out_s, out_i

    return search


@pytest.mark.parametrize("mode", ["fwd", "bwd", "intersect", "max", "union"])
def test_shard_invariance(mode: str) -> None:
    rng = np.random.default_rng(11)
    x, y = unit_rows(rng.standard_normal((30, 16))), unit_rows(rng.standard_normal((100, 16)))
    plain = mine_embeddings(x, y, k=4, mode=mode, threshold=0.9)
    sharded = mine_embeddings(x, y, k=4, mode=mode, threshold=0.9, search_fn=sharded_search(y))
    assert len(plain) > 5
    assert [(i, j) for _, i, j in sharded] == [(i, j) for _, i, j in plain]
    np.testing.assert_allclose([s for s, _, _ in sharded], [s for s, _, _ in plain], rtol=1e-6)


def test_search_fn_padding_is_trimmed_and_holes_rejected() -> None:
    y = unit_rows(np.random.default_rng(1).standard_normal((2, 4)))
    x = y.copy()
    sims, ids = knn(x, k=5, search_fn=sharded_search(y, 2))  # 2 rows in 2 shards: k' = 2
    assert ids.shape == (2, 2) and (ids >= 0).all()

    def holey(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(q), 2), np.float32), np.array([[0, 1], [0, -1]][: len(q)])

    with pytest.raises(ValueError, match=r"fewer than 2 neighbours for query rows \[1\]"):
        knn(x, k=2, search_fn=holey)


# ----------------------------------------------------------------------------------------------------------
# Planted pairs and a brute-force LASER oracle


def test_planted_pairs_are_recovered_exactly() -> None:
    rng = np.random.default_rng(2024)
    d, n, m = 64, 200, 2000
    y = unit_rows(rng.standard_normal((m, d)))
    x = unit_rows(rng.standard_normal((n, d)))
    src, trg = rng.choice(n, 50, replace=False), rng.choice(m, 50, replace=False)
    noise = unit_rows(rng.standard_normal((50, d)))
    x[src] = unit_rows(y[trg] + 0.484 * noise)  # cosine about 1 / sqrt(1 + 0.484^2) = 0.9
    cos = (x[src] * y[trg]).sum(axis=1)
    assert cos.min() > 0.85 and cos.max() < 0.95
    # planted pairs score about 0.9 / 0.5 ~ 1.7-1.8 under the ratio margin; the best random pair about 1.3
    got = mine_embeddings(x, y, threshold=1.55)
    assert sorted((i, j) for _, i, j in got) == sorted(zip(src.tolist(), trg.tolist(), strict=True))
    # the approximate max (backward kNN of candidate targets only, for huge databases) finds them too
    approx = mine_embeddings(x, y, threshold=1.55, backward_targets="candidates")
    assert [(i, j) for _, i, j in approx] == [(i, j) for _, i, j in got]


def laser_oracle(x: np.ndarray, y: np.ndarray, k: int, margin: str, mode: str, threshold: float):
    """LASER's mine_bitexts.py formulas in plain numpy on the full similarity matrix (float64)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    sim = x.astype(np.float64) @ y.astype(np.float64).T
    fwd_ind = np.argsort(-sim, axis=1)[:, : min(k, len(y))]
    bwd_ind = np.argsort(-sim.T, axis=1)[:, : min(k, len(x))]
    fwd_mean = np.take_along_axis(sim, fwd_ind, 1).mean(axis=1)
    bwd_mean = np.take_along_axis(sim.T, bwd_ind, 1).mean(axis=1)
    fn = {"ratio": lambda a, b: a / b, "distance": lambda a, b: a - b, "absolute": lambda a, b: a}[margin]
    fwd_scores = np.array(
        [[fn(sim[i, j], (fwd_mean[i] + bwd_mean[j]) / 2) for j in row] for i, row in enumerate(fwd_ind)]
    )
    bwd_scores = np.array(
        [[fn(sim[i, j], (fwd_mean[i] + bwd_mean[j]) / 2) for i in row] for j, row in enumerate(bwd_ind)]
    )
    fwd_best = fwd_ind[np.arange(len(x)), fwd_scores.argmax(axis=1)]
    bwd_best = bwd_ind[np.arange(len(y)), bwd_scores.argmax(axis=1)]
    fwd_pairs = [(fwd_scores[i].max(), i, int(j)) for i, j in enumerate(fwd_best)]
    bwd_pairs = [(bwd_scores[j].max(), int(i), j) for j, i in enumerate(bwd_best)]
    if mode == "fwd":
        out = fwd_pairs
    elif mode == "bwd":
        out = bwd_pairs
    elif mode == "intersect":
        out = [(s, i, j) for s, i, j in fwd_pairs if bwd_best[j] == i]
    elif mode == "union":
        out = list({(i, j): (s, i, j) for s, i, j in bwd_pairs + fwd_pairs}.values())
    else:
        pool = fwd_pairs + bwd_pairs
        seen_src, seen_trg, out = set(), set(), []
        for idx in np.argsort(-np.array([p[0] for p in pool])):
            s, i, j = pool[idx]
            if i not in seen_src and j not in seen_trg:
                seen_src.add(i), seen_trg.add(j)
                out.append((s, i, j))
    return sorted((p for p in out if p[0] > threshold), key=lambda p: (-p[0], p[1], p[2]))


@pytest.mark.parametrize("margin", ["ratio", "distance", "absolute"])
@pytest.mark.parametrize("mode", ["fwd", "bwd", "intersect", "max", "union"])
@pytest.mark.parametrize(("k", "threshold_for"), [(1, None), (4, None), (4, "median"), (60, None)])
def test_matches_brute_force_laser(margin: str, mode: str, k: int, threshold_for: str | None) -> None:
    rng = np.random.default_rng(5)
    # a shared offset keeps cosines (and neighbourhood means) positive, as with real sentence embeddings: near
    # zero means make the ratio ill-conditioned, and float32 search vs this float64 oracle would then disagree
    x = (rng.standard_normal((40, 8)) + 0.7).astype(np.float32)  # not normalised: mine_embeddings normalises
    y = ((rng.standard_normal((50, 8)) + 0.7) * 3).astype(np.float32)
    expected = laser_oracle(x, y, k, margin, mode, ALL)
    threshold = ALL
    if threshold_for == "median":  # halfway between two middle scores, far from both (float32 vs float64)
        scores = sorted(s for s, _, _ in expected)
        threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    expected = [p for p in expected if p[0] > threshold]
    got = mine_embeddings(x, y, k=k, margin=margin, mode=mode, threshold=threshold)
    assert [(i, j) for _, i, j in got] == [(i, j) for _, i, j in expected]
    np.testing.assert_allclose([s for s, _, _ in got], [s for s, _, _ in expected], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Input validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": True}, "k must be an integer >= 1"),
        ({"margin": "cosine"}, "unknown margin 'cosine': choose one of ratio, distance, absolute"),
        ({"mode": "both"}, "unknown mode 'both': choose one of fwd, bwd, intersect, max, union"),
        ({"threshold": float("nan")}, "threshold is NaN"),
        ({"backward_targets": "some"}, "backward_targets must be"),
    ],
)
def test_mine_embeddings_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    x = np.eye(2, 3, dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        mine_embeddings(x, x, **kwargs)


def test_mine_embeddings_rejects_bad_matrices() -> None:
    x = np.eye(3, 4, dtype=np.float32)
    with pytest.raises(ValueError, match="same dimension"):
        mine_embeddings(x, np.eye(3, 5, dtype=np.float32))
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x has NaN or inf in rows \[1\]"):
        mine_embeddings(bad, x)
    bad = x.copy()
    bad[2] = 0
    with pytest.raises(ValueError, match=r"y has all-zero rows \[2\]"):
        mine_embeddings(x, bad)
    with pytest.raises(ValueError, match="2-D"):
        mine_embeddings(x[0], x)


def test_empty_side_gives_no_pairs() -> None:
    assert mine_embeddings(np.zeros((0, 4), np.float32), np.eye(2, 4, dtype=np.float32)) == []


def test_results_are_deterministic_and_do_not_modify_inputs() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((25, 8)).astype(np.float32), rng.standard_normal((35, 8)).astype(np.float32)
    x0, y0 = x.copy(), y.copy()
    a = mine_embeddings(x, y, mode="union", threshold=ALL)
    b = mine_embeddings(x, y, mode="union", threshold=ALL)
    assert a == b
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    assert all(isinstance(s, float) and type(i) is int and type(j) is int for s, i, j in a)
    assert [(-s, i, j) for s, i, j in a] == sorted((-s, i, j) for s, i, j in a)
