"""index.factory: factory choice within a memory budget, size estimates, nprobe tuning."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index.factory import (
    ResourceError,
    choose_factory,
    choose_nlist,
    estimate_bytes,
    make_index,
    parse_factory,
    recall_at,
    tune_nprobe,
)

GB = 2**30


@pytest.fixture(autouse=True)
def _one_thread():
    """faiss's OpenMP threads spin badly on a shared 2-core machine; one thread is faster and deterministic."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(
    n: int, d: int, centers: int, seed: int, noise: float = 0.3, centers_seed: int = 0
) -> np.ndarray:
    """Seeded clustered unit vectors (overlapping clusters make IVF recall depend on nprobe, as real
    embeddings do); calls with the same ``centers_seed`` share the cluster centres."""
    c = np.random.default_rng(centers_seed).normal(size=(centers, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, centers, n)] + noise * rng.normal(size=(n, d)).astype(np.float32)
    faiss.normalize_L2(x)
    return x


def test_choose_nlist_is_a_power_of_two_near_4_sqrt_n():
    assert choose_nlist(1_000_000) == 4096  # 4 * 1000 = 4000 -> 4096
    assert choose_nlist(250_000) == 2048
    assert choose_nlist(1000) == 16  # capped: at least 39 training points per list
    assert choose_nlist(10) == 1


def test_small_collections_use_flat():
    c = choose_factory(100_000, 768, 8 * GB)
    assert c.factory == "Flat" and c.nlist is None
    assert c.est_bytes == 100_000 * 768 * 4


def test_millions_use_ivf_flat_when_memory_allows():
    c = choose_factory(1_600_000, 768, 16 * GB)
    assert c.factory == "IVF4096,Flat" and c.nlist == 4096
    assert c.est_bytes <= 16 * GB


def test_sq8_when_float_codes_do_not_fit():
    c = choose_factory(1_600_000, 768, 2 * GB)
    assert c.factory == "IVF4096,SQ8"


def test_opq_pq_when_memory_is_short():
    c = choose_factory(1_600_000, 768, 300 * 2**20)
    assert c.factory.startswith("OPQ") and ",IVF4096,PQ" in c.factory
    assert c.est_bytes <= 300 * 2**20
    m = parse_factory(c.factory)["m"]
    assert 768 % m == 0 and m == 128  # the largest code that fits


def test_nothing_fits_raises_with_advice():
    with pytest.raises(ResourceError, match="Raise the budget") as err:
        choose_factory(100_000_000, 768, 100 * 2**20)
    assert "100000000" in str(err.value) and "databases" in str(err.value)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n=0"):
        choose_factory(0, 768, GB)
    with pytest.raises(ValueError, match="unsupported index factory 'HNSW32'"):
        estimate_bytes("HNSW32", 10, 8)


@pytest.mark.parametrize(
    "factory",
    [
        "Flat",
        "IVF64,Flat",
        "IVF64,SQ8",
        "IVF64,PQ16",
        "IVF64,PQ8x4",
        pytest.param("OPQ8,IVF64,PQ8", marks=pytest.mark.slow),
    ],
)
def test_estimate_bytes_is_close_to_faiss_serialized_size(factory):
    n, d = 20_000, 32
    x = clustered(n, d, 30, seed=1)
    index = make_index(factory, d)
    index.train(x[:5000])
    index.add(x)
    actual = len(faiss.serialize_index(index))
    assert 0.7 * actual <= estimate_bytes(factory, n, d) <= 1.3 * actual


def test_recall_at_counts_overlap():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 9, 1], [7, 8, 4]])
    assert recall_at(found, truth, 3) == pytest.approx(3 / 6)
    assert recall_at(found, truth, 1) == pytest.approx(0.0)


def test_tune_nprobe_reaches_target_on_clustered_data():
    d, nlist = 32, 64
    xb = clustered(20_000, d, 100, seed=1, noise=1.5)
    xq = clustered(200, d, 100, seed=2, noise=1.5)  # held-out queries from the same clusters
    index = make_index(f"IVF{nlist},Flat", d)
    index.train(xb)
    index.add(xb)
    _, gt = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)
    nprobe, r1, r10 = tune_nprobe(index, xq, k=10, target_recall=0.95, gt_ids=gt)
    assert 1 < nprobe < nlist  # the target needs more than one list, and fewer than all
    assert r10 >= 0.95 and r1 >= 0.9
    # independent check with the returned nprobe, and minimality
    ids = index.search(xq, 10, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]
    assert recall_at(ids, gt, 10) == pytest.approx(r10)
    fewer = index.search(xq, 10, params=faiss.SearchParametersIVF(nprobe=nprobe - 1))[1]
    assert recall_at(fewer, gt, 10) < 0.95
    assert faiss.extract_index_ivf(index).nprobe == 1  # tuning never changed the index
    # without gt_ids it computes exact results itself (IVF-Flat with every list probed is exact)
    assert tune_nprobe(index, xq, k=10, target_recall=0.95).nprobe == nprobe


def test_tune_nprobe_on_flat_reports_exact_recall():
    x = clustered(500, 16, 5, seed=4)
    index = faiss.IndexFlatIP(16)
    index.add(x)
    assert tune_nprobe(index, x[:20], k=5) == (None, 1.0, 1.0)


def test_tune_nprobe_lossy_codes_need_ground_truth():
    x = clustered(5000, 16, 20, seed=5)
    index = faiss.index_factory(16, "IVF16,SQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    with pytest.raises(ValueError, match="gt_ids"):
        tune_nprobe(index, x[:10])


def test_tune_nprobe_with_lossy_codes_settles_for_the_best_recall(caplog):
    xb = clustered(4000, 16, 20, seed=6, noise=1.0)
    xq = clustered(100, 16, 20, seed=7, noise=1.0)
    index = make_index("IVF16,PQ2x4", 16)  # 1 byte per vector: recall@10 stays far below 0.95
    index.train(xb)
    index.add(xb)
    _, gt = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)
    nprobe, _, r10 = tune_nprobe(index, xq, k=10, target_recall=0.95, gt_ids=gt)
    full = recall_at(index.search(xq, 10, params=faiss.SearchParametersIVF(nprobe=16))[1], gt, 10)
    assert full < 0.95 and "below the target" in caplog.text
    assert r10 >= full  # an nprobe that does as well as probing every list
    ids = index.search(xq, 10, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]
    assert recall_at(ids, gt, 10) == pytest.approx(r10)
