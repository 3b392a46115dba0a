"""index.sharded: merged shard search equals one index over the same vectors; clear errors."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index.build import build_index
from index.factory import make_index
from index.manifest import IndexFormatError, Manifest, SpaceMismatchError
from index.sharded import ShardedIndex
from index.vectors import prepare_vectors

D = 16


@pytest.fixture(autouse=True)
def _one_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def vectors(n: int, seed: int) -> np.ndarray:
    return prepare_vectors(np.random.default_rng(seed).normal(size=(n, D)), D)


def flat_oracle(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(D)
    index.add(xb)
    return index.search(xq, k)


@pytest.mark.parametrize("shard_size", [1, 7, 100, 333, 1000])
@pytest.mark.parametrize("k", [1, 10, 150])
def test_sharded_flat_equals_one_flat_index(tmp_path, shard_size, k):
    xb, xq = vectors(333, seed=0), vectors(20, seed=1)
    build_index(tmp_path / "db", xb, store=False, space_id="t-16", shard_size=shard_size, batch_size=50)
    index = ShardedIndex.load(tmp_path / "db")
    assert index.ntotal == 333 and len(index.manifest.shards) == -(-333 // shard_size)
    scores, ids = index.search(xq, k)
    ref_scores, ref_ids = flat_oracle(xb, xq, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (20, k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shard_size", [4, 50])
def test_k_larger_than_ntotal_pads_with_minus_one_and_minus_inf(tmp_path, shard_size):
    xb, xq = vectors(50, seed=2), vectors(3, seed=3)
    build_index(tmp_path / "db", xb, store=False, space_id="t-16", shard_size=shard_size)
    scores, ids = ShardedIndex.load(tmp_path / "db").search(xq, 64)
    ref_scores, ref_ids = flat_oracle(xb, xq, 50)
    np.testing.assert_array_equal(ids[:, :50], ref_ids)
    np.testing.assert_allclose(scores[:, :50], ref_scores, atol=1e-6)
    assert (ids[:, 50:] == -1).all() and np.isneginf(scores[:, 50:]).all()


def test_sharded_ivf_equals_one_ivf_with_the_same_centroids(tmp_path):
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(20, D))
    xb = prepare_vectors(centers[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, D)), D)
    xq = vectors(30, seed=5)
    m = build_index(
        tmp_path / "db",
        xb,
        store=False,
        space_id="t-16",
        factory="IVF16,Flat",
        shard_size=900,
        tune_queries=100,
    )
    assert m.nlist == 16 and 1 <= m.nprobe <= 16
    index = ShardedIndex.load(tmp_path / "db")
    single = faiss.read_index(str(tmp_path / "db" / "trained.faiss"))
    single.add(xb)
    for nprobe in (1, 3, 16):
        scores, ids = index.search(xq, 10, nprobe=nprobe)
        ref_scores, ref_ids = single.search(xq, 10, params=faiss.SearchParametersIVF(nprobe=nprobe))
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    assert faiss.extract_index_ivf(index._shards[0]).nprobe == 1  # per-call parameters, index untouched
    # the default nprobe is the tuned one
    np.testing.assert_array_equal(index.search(xq, 10)[1], index.search(xq, 10, nprobe=m.nprobe)[1])


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("factory", ["IVF8,SQ8", pytest.param("OPQ4,IVF8,PQ4", marks=pytest.mark.slow)])
def test_sharded_quantized_ivf_equals_one_index(tmp_path, factory, mmap):
    xb, xq = vectors(3000, seed=8), vectors(20, seed=9)
    build_index(
        tmp_path / "db",
        xb,
        store=False,
        space_id="t-16",
        factory=factory,
        shard_size=1100,
        train_size=3000,
        tune_queries=0,
    )
    index = ShardedIndex.load(tmp_path / "db", mmap=mmap, mmap_min_bytes=0)
    if mmap:  # mapped shards stay apart: queries are assigned to lists once for all of them
        assert len(index._shards) == 3 and index._shared is not None
    else:  # merged into one index, searched by faiss itself
        assert len(index._shards) == 1 and index._shared is None
    single = faiss.read_index(str(tmp_path / "db" / "trained.faiss"))
    single.add(xb)
    for nprobe in (2, 8):
        scores, ids = index.search(xq, 7, nprobe=nprobe)
        ref_scores, ref_ids = single.search(xq, 7, params=faiss.SearchParametersIVF(nprobe=nprobe))
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_shards_with_different_centroids_are_searched_one_by_one(tmp_path):
    xb, xq = vectors(600, seed=10), vectors(5, seed=11)
    build_index(
        tmp_path / "db", xb, store=False, space_id="t-16", factory="IVF4,Flat", shard_size=300, tune_queries=0
    )
    other = make_index("IVF4,Flat", D)
    other.train(vectors(600, seed=12))
    other.add(xb[300:])
    faiss.write_index(other, str(tmp_path / "db" / "shard_00001.faiss"))
    index = ShardedIndex.load(tmp_path / "db")
    assert index._shared is None
    scores, ids = index.search(xq, 5, nprobe=4)  # every list probed: exact
    ref_scores, ref_ids = flat_oracle(xb, xq, 5)
    np.testing.assert_array_equal(ids, ref_ids)


def test_wrong_query_dim_or_values_raise(tmp_path):
    build_index(tmp_path / "db", vectors(10, 0), store=False, space_id="t-16")
    index = ShardedIndex.load(tmp_path / "db")
    with pytest.raises(ValueError, match=r"\(2, 8\).*\(n, 16\)"):
        index.search(np.zeros((2, 8), np.float32), 3)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros(16, np.float32), 3)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 16), np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="k=0"):
        index.search(vectors(1, 1), 0)


def test_float64_queries_are_accepted(tmp_path):
    xb = vectors(40, 0)
    build_index(tmp_path / "db", xb, store=False, space_id="t-16", shard_size=15)
    index = ShardedIndex.load(tmp_path / "db")
    np.testing.assert_array_equal(index.search(xb[:4].astype(np.float64), 1)[1][:, 0], [0, 1, 2, 3])


def test_reconstruct_batch_returns_stored_vectors(tmp_path):
    xb = vectors(100, 6)
    build_index(tmp_path / "db", xb, store=False, space_id="t-16", shard_size=30)
    index = ShardedIndex.load(tmp_path / "db")
    ids = np.array([99, 0, 31, 30, 29, 60])
    np.testing.assert_allclose(index.reconstruct_batch(ids), xb[ids], atol=1e-6)  # re-normalised on add
    with pytest.raises(ValueError, match="outside"):
        index.reconstruct_batch([100])


def test_reconstruct_batch_on_ivf_builds_the_direct_map(tmp_path):
    xb = vectors(600, 7)
    build_index(
        tmp_path / "db", xb, store=False, space_id="t-16", factory="IVF4,Flat", shard_size=250, tune_queries=0
    )
    index = ShardedIndex.load(tmp_path / "db")
    np.testing.assert_allclose(index.reconstruct_batch([599, 3, 250]), xb[[599, 3, 250]], atol=1e-6)


def test_check_space_names_both_spaces(tmp_path):
    build_index(tmp_path / "db", vectors(5, 0), store=False, space_id="labse-768-test")
    index = ShardedIndex.load(tmp_path / "db")
    index.check_space("labse-768-test")
    with pytest.raises(SpaceMismatchError, match="'e5-small-384'.*'labse-768-test'"):
        index.check_space("e5-small-384")


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupted_shard_gives_clear_error_naming_it(tmp_path, damage):
    build_index(tmp_path / "db", vectors(100, 0), store=False, space_id="t-16", shard_size=40)
    shard = tmp_path / "db" / "shard_00001.faiss"
    data = shard.read_bytes()
    broken = {"garbage": b"\x00garbage" * 50, "truncate": data[: len(data) // 2], "empty": b""}[damage]
    shard.write_bytes(broken)
    before = {p.name: p.read_bytes() for p in (tmp_path / "db").iterdir()}
    with pytest.raises(IndexFormatError, match="shard_00001.faiss"):
        ShardedIndex.load(tmp_path / "db")
    assert {p.name: p.read_bytes() for p in (tmp_path / "db").iterdir()} == before  # nothing overwritten


def test_flipped_byte_is_caught_by_verify(tmp_path):
    build_index(tmp_path / "db", vectors(100, 0), store=False, space_id="t-16", shard_size=40)
    shard = tmp_path / "db" / "shard_00002.faiss"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01  # still a readable index, but not the one that was built
    shard.write_bytes(bytes(data))
    ShardedIndex.load(tmp_path / "db")  # without verify the damage is invisible
    with pytest.raises(IndexFormatError, match="shard_00002.faiss.*checksum"):
        ShardedIndex.load(tmp_path / "db", verify=True)


def test_missing_shard_and_unfinished_build_are_refused(tmp_path):
    build_index(tmp_path / "db", vectors(50, 0), store=False, space_id="t-16", shard_size=20)
    m = Manifest.load(tmp_path / "db")
    m.complete = False
    m.save(tmp_path / "db")
    with pytest.raises(IndexFormatError, match="did not finish"):
        ShardedIndex.load(tmp_path / "db")
    (tmp_path / "db" / "shard_00000.faiss").unlink()
    with pytest.raises(IndexFormatError, match="shard_00000.faiss.*missing"):
        ShardedIndex.load(tmp_path / "db", allow_incomplete=True)


def test_shard_disagreeing_with_manifest_is_refused(tmp_path):
    build_index(tmp_path / "db", vectors(50, 0), store=False, space_id="t-16", shard_size=20)
    other = make_index("Flat", D)
    other.add(vectors(3, 9))
    faiss.write_index(other, str(tmp_path / "db" / "shard_00001.faiss"))
    with pytest.raises(IndexFormatError, match="shard_00001.faiss.*3 vectors"):
        ShardedIndex.load(tmp_path / "db")


def test_mmap_loading_gives_the_same_results(tmp_path):
    xb, xq = vectors(500, 0), vectors(5, 1)
    build_index(
        tmp_path / "db", xb, store=False, space_id="t-16", factory="IVF8,Flat", shard_size=200, tune_queries=0
    )
    a = ShardedIndex.load(tmp_path / "db", mmap=True, mmap_min_bytes=0).search(xq, 5, nprobe=8)
    b = ShardedIndex.load(tmp_path / "db", mmap=False).search(xq, 5, nprobe=8)
    np.testing.assert_array_equal(a[1], b[1])


def test_gpu_request_on_cpu_faiss_falls_back_with_a_warning(tmp_path, caplog):
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present; the fallback path is for CPU-only faiss")
    xb = vectors(30, 0)
    build_index(tmp_path / "db", xb, store=False, space_id="t-16")
    index = ShardedIndex.load(tmp_path / "db", gpu=True, fp16=True)
    assert not index.on_gpu and "no GPU" in caplog.text
    assert index.search(xb[:2], 1)[1][:, 0].tolist() == [0, 1]


@pytest.mark.gpu
def test_gpu_search_matches_cpu(tmp_path):
    if faiss.get_num_gpus() == 0:
        pytest.skip("needs faiss with a GPU")
    xb, xq = vectors(2000, 0), vectors(10, 1)
    build_index(tmp_path / "db", xb, store=False, space_id="t-16", shard_size=700)
    cpu = ShardedIndex.load(tmp_path / "db").search(xq, 5)
    gpu = ShardedIndex.load(tmp_path / "db", gpu=True).search(xq, 5)
    np.testing.assert_array_equal(cpu[1], gpu[1])


def test_empty_database_returns_no_results(tmp_path):
    build_index(tmp_path / "db", np.zeros((0, D), np.float32), store=False, space_id="t-16")
    scores, ids = ShardedIndex.load(tmp_path / "db").search(vectors(2, 0), 3)
    assert (ids == -1).all() and np.isneginf(scores).all()


def test_append_adds_shards_and_search_equals_flat(tmp_path) -> None:
    """`miner index add`: a finished database reopened with append=True gains shards with continuing ids."""
    import faiss
    import numpy as np

    from index.build import ShardWriter
    from index.sharded import ShardedIndex

    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    faiss.normalize_L2(x)
    rows = [{"text": f"s{i}"} for i in range(300)]
    with ShardWriter(tmp_path / "db", 16, "Flat", space_id="t-16", shard_size=100, created="t") as w:
        w.add(x[:200], rows[:200])
    with ShardWriter(
        tmp_path / "db", 16, "Flat", space_id="t-16", shard_size=100, created="t", append=True
    ) as w:
        assert w.completed_count() == 0
        w.add(x[200:], rows[200:])
    idx = ShardedIndex.load(tmp_path / "db")
    assert idx.ntotal == 300 and len(idx.manifest.shards) == 3 and idx.manifest.extra["appends"] == 1
    flat = faiss.IndexFlatIP(16)
    flat.add(x)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    faiss.normalize_L2(q)
    d_ref, i_ref = flat.search(q, 5)
    d, i = idx.search(q, 5)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-5)


def test_in_memory_ivf_shards_are_merged_with_global_ids(tmp_path) -> None:
    """IVF shards sharing centroids load as one index (one scan per list); ids, scores, vectors unchanged."""
    import faiss
    import numpy as np

    from index.build import ShardWriter
    from index.sharded import ShardedIndex

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    faiss.normalize_L2(x)
    with ShardWriter(
        tmp_path / "db",
        16,
        "IVF16,Flat",
        space_id="t",
        shard_size=1000,
        store=False,
        tune_queries=0,
        created="t",
    ) as w:
        w.add(x)
    merged = ShardedIndex.load(tmp_path / "db", mmap=False)
    separate = ShardedIndex.load(tmp_path / "db", mmap=True, mmap_min_bytes=0)  # memory-mapped: not merged
    assert len(merged._shards) == 1 and len(separate._shards) == 3
    q = x[rng.choice(3000, 50, replace=False)]
    for nprobe in (1, 4, 16):
        d1, i1 = merged.search(q, 7, nprobe=nprobe)
        d2, i2 = separate.search(q, 7, nprobe=nprobe)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(d1, d2, rtol=1e-6)
    ids = np.array([0, 999, 1000, 2999])
    np.testing.assert_allclose(merged.reconstruct_batch(ids), x[ids], atol=1e-6)


@pytest.mark.parametrize("mmap", [True, False])
def test_search_uses_all_threads_and_matches_one_thread(tmp_path, mmap) -> None:
    """Separate shards run search_preassigned with parallel_mode 3 (faiss's default 0 runs it on one thread);
    results with 2 threads equal those with 1 thread and those of one plain index."""
    xb, xq = vectors(3000, seed=20), vectors(64, seed=21)
    build_index(
        tmp_path / "db",
        xb,
        store=False,
        space_id="t-16",
        factory="IVF16,Flat",
        shard_size=1000,
        tune_queries=0,
    )
    index = ShardedIndex.load(tmp_path / "db", mmap=mmap, mmap_min_bytes=0)
    parts = [faiss.extract_index_ivf(s) for s in index._shards]
    assert len(parts) == (3 if mmap else 1)
    assert all(ivf.parallel_mode == (3 if mmap else 0) for ivf in parts)
    single = faiss.read_index(str(tmp_path / "db" / "trained.faiss"))
    single.add(xb)
    ref_scores, ref_ids = single.search(xq, 10, params=faiss.SearchParametersIVF(nprobe=5))
    one = index.search(xq, 10, nprobe=5)
    faiss.omp_set_num_threads(2)  # the autouse fixture restores the count
    two = index.search(xq, 10, nprobe=5)
    for scores, ids in (one, two):
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
