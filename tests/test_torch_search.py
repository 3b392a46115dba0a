"""index.torch_search: exact search as a torch matrix product + top-k, against faiss's Flat search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from index.build import build_index
from index.sharded import ShardedIndex
from index.torch_search import TorchFlatSearch
from index.vectors import prepare_vectors

D = 32


def unit(n: int, seed: int, d: int = D) -> np.ndarray:
    return prepare_vectors(np.random.default_rng(seed).normal(size=(n, d)), d)


def faiss_flat(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    return index.search(xq, k)


def assert_same_as_faiss(scores, ids, ref_scores, ref_ids, atol=1e-6):
    """Ids equal to faiss's wherever scores differ; a differing id is only ever a near-tie swapped."""
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=atol)
    rows, cols = np.nonzero(ids != ref_ids)
    assert len(rows) <= 0.01 * ids.size, f"{len(rows)} of {ids.size} ids differ"
    k = ids.shape[1]
    for r, c in zip(rows, cols, strict=True):
        neighbours = [ref_scores[r, j] for j in (c - 1, c + 1) if 0 <= j < k]
        gap = min(abs(ref_scores[r, c] - s) for s in neighbours) if neighbours else 0.0
        assert gap < 2 * atol or c == k - 1, (
            f"query {r} rank {c}: id {ids[r, c]} vs {ref_ids[r, c]}, gap {gap}"
        )


@pytest.mark.parametrize("budget", [None, 4 * 40 * 64])  # one block / many row and query blocks
@pytest.mark.parametrize("k", [1, 10, 100])
def test_matches_faiss_flat_on_random_vectors(budget, k):
    xb, xq = unit(3000, 0), unit(40, 1)
    parts = [xb[:1000], xb[1000:1001], xb[1001:]]
    searcher = TorchFlatSearch.from_arrays(parts, xb.shape, "cpu", score_budget_bytes=budget)
    scores, ids = searcher.search(xq, k)
    ref_scores, ref_ids = faiss_flat(xb, xq, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (40, k)
    assert_same_as_faiss(scores, ids, ref_scores, ref_ids)
    # most queries come out identical, id for id
    assert (ids == ref_ids).all(axis=1).mean() >= 0.95


@pytest.mark.parametrize("budget", [None, 4 * 7 * 40])
@pytest.mark.parametrize("k", [1, 5, 17, 600])
def test_equal_scores_keep_and_list_the_lowest_ids_first(budget, k):
    """Exactly tied data (duplicated rows, small binary fractions: every product exact): a stable sort's order."""
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=(300, 16)) * 2) / 4
    xb = np.concatenate([x, x[rng.integers(0, 300, 200)], x[:50]]).astype(np.float32)
    xq = xb[rng.integers(0, len(xb), 40)]
    searcher = TorchFlatSearch.from_arrays([xb[:123], xb[123:]], xb.shape, "cpu", score_budget_bytes=budget)
    scores, ids = searcher.search(xq, k)
    full = xq @ xb.T
    expect = np.argsort(-full, axis=1, kind="stable")[:, : min(k, len(xb))]
    np.testing.assert_array_equal(ids[:, : expect.shape[1]], expect)
    np.testing.assert_array_equal(scores[:, : expect.shape[1]], np.take_along_axis(full, expect, 1))
    # the same scores as faiss, whose choice among equal scores is its own
    ref_scores, _ = faiss_flat(xb, xq, k)
    n = expect.shape[1]
    np.testing.assert_array_equal(scores[:, :n], ref_scores[:, :n])
    assert np.isneginf(scores[:, n:]).all()


def test_k_past_ntotal_and_empty_inputs():
    xb = unit(5, 2)
    searcher = TorchFlatSearch.from_arrays([xb], xb.shape, "cpu")
    scores, ids = searcher.search(unit(3, 4), 8)
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert sorted(ids[0, :5].tolist()) == list(range(5))
    scores, ids = searcher.search(np.zeros((0, D), np.float32), 3)
    assert ids.shape == (0, 3)
    empty = TorchFlatSearch.from_arrays([], (0, D), "cpu")
    scores, ids = empty.search(unit(2, 5), 3)
    assert (ids == -1).all() and np.isneginf(scores).all()


def test_parts_must_fill_the_declared_shape():
    with pytest.raises(ValueError, match="overflow"):
        TorchFlatSearch.from_arrays([unit(4, 0)], (3, D), "cpu")
    with pytest.raises(ValueError, match="3 rows, 5 declared"):
        TorchFlatSearch.from_arrays([unit(3, 0)], (5, D), "cpu")


def test_fp16_vectors_stay_within_fp16_tolerance():
    xb, xq = unit(2000, 6), unit(20, 7)
    searcher = TorchFlatSearch.from_arrays([xb], xb.shape, "cpu", dtype=torch.float16)
    assert searcher.vectors.dtype == torch.float16
    scores, ids = searcher.search(xq, 10)
    ref_scores, ref_ids = faiss_flat(xb, xq, 10)
    np.testing.assert_allclose(scores, ref_scores, atol=3e-3)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref_ids, strict=True)])
    assert recall >= 0.95


@pytest.mark.parametrize("shard_size", [7, 250, 1000])
def test_sharded_index_on_the_torch_backend_equals_faiss(tmp_path, shard_size):
    xb, xq = unit(1000, 8), unit(25, 9)
    build_index(tmp_path / "db", xb, store=False, space_id="t-32", shard_size=shard_size)
    faiss_index = ShardedIndex.load(tmp_path / "db", backend="faiss")
    torch_index = ShardedIndex.load(tmp_path / "db", backend="torch", device="cpu")
    assert faiss_index.backend == "faiss-cpu" and torch_index.backend == "torch-cpu"
    for k in (1, 10, 1200):
        scores, ids = torch_index.search(xq, k)
        ref_scores, ref_ids = faiss_index.search(xq, k)
        finite = np.isfinite(ref_scores)
        np.testing.assert_array_equal(np.isfinite(scores), finite)
        assert_same_as_faiss(np.where(finite, scores, 0), ids, np.where(finite, ref_scores, 0), ref_ids)
    # the stored vectors are still there to reconstruct
    np.testing.assert_allclose(torch_index.reconstruct_batch(np.array([0, 999])), xb[[0, 999]], atol=1e-6)


def test_backend_choice_and_its_errors(tmp_path):
    xb = unit(400, 10)
    build_index(tmp_path / "flat", xb, store=False, space_id="t-32")
    assert ShardedIndex.load(tmp_path / "flat", device="cpu").backend == "faiss-cpu"
    with pytest.raises(ValueError, match="use auto, faiss or torch"):
        ShardedIndex.load(tmp_path / "flat", backend="cupy")
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        ShardedIndex.load(tmp_path / "flat", device="tpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            ShardedIndex.load(tmp_path / "flat", device="cuda")
    build_index(tmp_path / "ivf", xb, store=False, space_id="t-32", factory="IVF4,Flat", tune_queries=50)
    with pytest.raises(ValueError, match="Flat databases only.*use backend faiss"):
        ShardedIndex.load(tmp_path / "ivf", backend="torch", device="cpu")


def test_auto_on_a_cpu_machine_is_faiss(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: auto picks a GPU backend")
    build_index(tmp_path / "db", unit(50, 11), store=False, space_id="t-32")
    assert ShardedIndex.load(tmp_path / "db").backend == "faiss-cpu"


@pytest.mark.gpu
def test_cuda_auto_picks_torch_for_flat_and_matches_the_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if faiss.get_num_gpus() > 0:
        pytest.skip("faiss has GPUs here: auto uses faiss-GPU")
    xb, xq = unit(20000, 12), unit(64, 13)
    build_index(tmp_path / "db", xb, store=False, space_id="t-32", shard_size=7000)
    gpu = ShardedIndex.load(tmp_path / "db")
    assert gpu.backend.startswith("torch-cuda")
    scores, ids = gpu.search(xq, 10)
    ref_scores, ref_ids = ShardedIndex.load(tmp_path / "db", device="cpu").search(xq, 10)
    np.testing.assert_allclose(scores, ref_scores, atol=3e-3)  # fp16 vectors on the GPU
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref_ids, strict=True)])
    assert recall >= 0.98
    exact = ShardedIndex.load(tmp_path / "db", backend="torch", device="cpu").search(xq, 10)
    assert_same_as_faiss(exact[0], exact[1], ref_scores, ref_ids)
