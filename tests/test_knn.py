"""The index that backward kNN searches: exact (flat) below the size threshold, IVF above it or on request."""

from __future__ import annotations

import numpy as np
import pytest

from miner.knn import IVF_MIN_WORK, ivf_pays, source_index
from miner.mine import mine_embeddings


def clustered(n: int, d: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """(n, d) float32 unit rows scattered around ``centres`` (like real embeddings: clustered, not uniform)."""
    rng = np.random.default_rng(seed)
    a = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """8,000 sources and 6,000 targets, half of them noisy copies of sources (the true pairs)."""
    d = 32
    centres = np.random.default_rng(0).standard_normal((200, d)).astype(np.float32)
    x = clustered(8000, d, 1, centres)
    noise = 0.03 * np.random.default_rng(2).standard_normal((3000, d)).astype(np.float32)
    copies = x[:3000] + noise
    y = np.concatenate(
        [copies / np.linalg.norm(copies, axis=1, keepdims=True), clustered(3000, d, 3, centres)]
    )
    return x, y.astype(np.float32)


def test_auto_follows_the_work_and_ivf_on_request(data: tuple[np.ndarray, np.ndarray]) -> None:
    import faiss

    x, _ = data
    n, d = x.shape
    assert isinstance(source_index(x, "auto"), faiss.IndexFlatIP)  # n x n x d is far below the threshold
    below, enough = int(IVF_MIN_WORK / (n * d)) - 1, int(IVF_MIN_WORK / (n * d)) + 1
    assert isinstance(source_index(x, "auto", n_queries=below), faiss.IndexFlatIP)
    assert isinstance(source_index(x, "auto", n_queries=enough), faiss.IndexIVFFlat)
    assert isinstance(source_index(x, "flat"), faiss.IndexFlatIP)
    ivf = source_index(x, "ivf")
    assert isinstance(ivf, faiss.IndexIVFFlat) and ivf.ntotal == len(x)
    assert ivf.nlist == min(int(4 * np.sqrt(len(x))), len(x) // 39) and ivf.nprobe == 16
    assert isinstance(source_index(x[:1000], "ivf"), faiss.IndexFlatIP)  # too few rows to train 64 lists
    with pytest.raises(ValueError, match="backward_index 'hnsw': use one of auto, flat, ivf"):
        source_index(x, "hnsw")


@pytest.mark.parametrize(
    ("sources", "queries", "dim", "ivf"),
    [
        (92_442, 19_763, 384, False),  # real e5 vectors: flat 11.9 s, IVF 11.3 s and 2% of the pairs changed
        (50_000, 123_811, 768, True),  # synthetic: flat 33.9 s, IVF 29.5 s (nprobe 32), same pairs
        (100_000, 187_965, 768, True),  # synthetic: flat 99.9 s, IVF 45.0 s (nprobe 16), one pair fewer
        (1_000_000, 2_500_000, 768, True),
        (5_000, 20_000, 768, False),
    ],
)
def test_auto_rule_matches_the_measured_cases(sources: int, queries: int, dim: int, ivf: bool) -> None:
    """The cases of docs/benchmarks.md ("Margin step at scale") fall on the side their timings chose."""
    assert ivf_pays(sources, queries, dim) is ivf


def test_ivf_neighbours_are_close_to_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    exact_sims, exact_ids = source_index(x, "flat").search(y, 4)
    ivf_sims, ivf_ids = source_index(x, "ivf").search(y, 4)
    recall = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(exact_ids, ivf_ids, strict=True)])
    assert recall > 0.9, recall
    assert (ivf_ids[:3000, 0] == np.arange(3000)).mean() > 0.99  # a copy's own source is found
    # The margin's backward term (mean of the k similarities) moves little.
    assert np.abs(exact_sims.mean(axis=1) - ivf_sims.mean(axis=1)).mean() < 0.01


def test_mining_with_an_ivf_backward_index_keeps_the_true_pairs(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    exact = mine_embeddings(x, y, k=4, threshold=1.05, backward_index="flat")
    approx = mine_embeddings(x, y, k=4, threshold=1.05, backward_index="ivf")
    true_exact = {(s, t) for _, s, t in exact if s == t}
    true_approx = {(s, t) for _, s, t in approx if s == t}
    assert len(true_exact) > 2900  # the task is easy for exact mining
    assert len(true_approx & true_exact) >= 0.98 * len(true_exact)
    assert abs(len(approx) - len(exact)) <= 0.02 * len(exact)
    with pytest.raises(ValueError, match="backward_index 'exact'"):
        mine_embeddings(x, y, backward_index="exact")
