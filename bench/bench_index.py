"""Benchmark the index package: build and search N synthetic 768-d vectors with the auto-chosen factory.

Reports build time, peak memory, queries/s at the nprobe that reaches recall@10 >= 0.95 on held-out queries,
and the time ratio of ``ShardedIndex.search`` to one plain faiss index holding the same vectors (same
trained quantizer, same nprobe), measured in the same run.

    python bench/bench_index.py                 # 1.6M vectors (several minutes, ~10 GB of memory)
    python bench/bench_index.py --n 200000 --shard-size 50000

Data: overlapping clusters in a low-dimensional subspace lifted to 768-d (see ``Synthetic``), generated chunk
by chunk from seeds so that the exact ground truth and the plain index see the same vectors without keeping
them in memory.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.build import ShardWriter  # noqa: E402
from index.factory import choose_factory, make_index, recall_at, tune_nprobe  # noqa: E402
from index.sharded import ShardedIndex  # noqa: E402

CHUNK = 50_000


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Synthetic:
    """Unit vectors with embedding-like structure, reproducible chunk by chunk.

    Points are drawn around ``clusters`` centres in a ``latent``-dimensional subspace (``spread`` is the
    within-cluster standard deviation there, comparable to the distance between centres so clusters overlap),
    mapped to ``dim`` dimensions by a fixed random matrix, with a little isotropic noise: neighbourhoods are
    neither clean clusters (easy for IVF) nor a structureless Gaussian (the worst case).
    """

    def __init__(
        self, n: int, dim: int, clusters: int = 10_000, latent: int = 64, spread: float = 1.0, seed: int = 0
    ) -> None:
        self.n, self.dim, self.spread, self.seed = n, dim, spread, seed
        rng = np.random.default_rng(seed)
        self.centers = rng.standard_normal((clusters, latent), dtype=np.float32)
        self.lift = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)

    def _draw(self, count: int, seed: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng(seed)
        z = self.centers[rng.integers(0, len(self.centers), count)]
        z += self.spread * rng.standard_normal(z.shape, dtype=np.float32)
        x = z @ self.lift
        x += np.float32(0.3) * rng.standard_normal(x.shape, dtype=np.float32)
        faiss.normalize_L2(x)
        return x

    def chunks(self):
        for i, start in enumerate(range(0, self.n, CHUNK)):
            yield start, self._draw(min(CHUNK, self.n - start), (self.seed, 1, i))

    def queries(self, nq: int) -> np.ndarray:
        return self._draw(nq, (self.seed, 2))  # held out: not in the database


def exact_topk(data: Synthetic, xq: np.ndarray, k: int) -> np.ndarray:
    heap = faiss.ResultHeap(len(xq), k, keep_max=True)
    for start, x in data.chunks():
        dist, ids = faiss.knn(xq, x, k, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(dist, ids + start)
    heap.finalize()
    return heap.I


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_600_000, help="database vectors (default 1.6M)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=1000, help="held-out queries")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--shard-size", type=int, default=500_000)
    p.add_argument(
        "--memory-gb", type=float, default=None, help="index memory budget (default: half the RAM)"
    )
    p.add_argument("--factory", default=None, help="override the auto-chosen factory")
    p.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's)")
    p.add_argument("--repeat", type=int, default=3, help="timed search repetitions (best kept)")
    p.add_argument("--folder", default=None, help="database folder (default: a temp folder, removed after)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    budget = (
        int(args.memory_gb * 2**30)
        if args.memory_gb
        else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    )
    choice = choose_factory(args.n, args.dim, budget)
    factory = args.factory or choice.factory
    tmp = None if args.folder else tempfile.mkdtemp(prefix="bench_index_")
    folder = Path(args.folder or tmp) / "db"
    data = Synthetic(args.n, args.dim)

    # build
    t0 = time.perf_counter()
    writer = ShardWriter(
        folder,
        args.dim,
        factory,
        space_id=f"bench-{args.dim}",
        store=False,
        shard_size=args.shard_size,
        tune_queries=1000,
        tune_k=args.k,
        target_recall=args.target_recall,
    )
    for _, x in data.chunks():
        writer.add(x)
    manifest = writer.close()
    build_s = time.perf_counter() - t0
    build_peak = peak_rss_gib()

    # ground truth on held-out queries, then the nprobe reaching the target on them
    xq = data.queries(args.queries)
    gt = exact_topk(data, xq, args.k)
    index = ShardedIndex.load(folder)
    t0 = time.perf_counter()
    tuned = tune_nprobe(index, xq, k=args.k, target_recall=args.target_recall, gt_ids=gt)
    tune_s = time.perf_counter() - t0
    nprobe = tuned.nprobe

    sharded_s = best_time(lambda: index.search(xq, args.k, nprobe=nprobe), args.repeat)
    one = xq[:1]
    lat = sorted(best_time(lambda q=one: index.search(q, args.k, nprobe=nprobe), 1) for _ in range(50))
    search_peak = peak_rss_gib()

    # one plain faiss index over the same vectors (same trained quantizer), searched directly
    plain = (
        faiss.read_index(str(folder / "trained.faiss")) if manifest.nlist else make_index(factory, args.dim)
    )
    for _, x in data.chunks():
        plain.add(x)
    params = faiss.SearchParametersIVF(nprobe=nprobe) if nprobe else None
    plain_s = best_time(lambda: plain.search(xq, args.k, params=params), args.repeat)
    same = recall_at(
        plain.search(xq, args.k, params=params)[1], index.search(xq, args.k, nprobe=nprobe)[1], args.k
    )

    rows = [
        ("vectors x dim", f"{args.n:,} x {args.dim}"),
        ("factory", f"{factory} ({choice.reason})" if not args.factory else factory),
        ("shards", f"{len(manifest.shards)} x <= {args.shard_size:,}"),
        ("faiss threads", str(faiss.omp_get_max_threads())),
        ("build time", f"{build_s:.1f} s ({args.n / build_s:,.0f} vectors/s)"),
        (
            "peak RSS after build",
            f"{build_peak:.2f} GiB (estimate for the index: {choice.est_bytes / 2**30:.2f} GiB)",
        ),
        ("peak RSS after search", f"{search_peak:.2f} GiB"),
        (
            "nprobe (build-time tuning)",
            f"{manifest.nprobe} (recall@{args.k} {manifest.build.get('tuning', {}).get('recall_at_k', 1.0)})",
        ),
        (
            f"nprobe for recall@{args.k} >= {args.target_recall} (held-out)",
            f"{nprobe} (tuned in {tune_s:.1f} s)",
        ),
        (f"recall@1 / recall@{args.k}", f"{tuned.recall_at_1:.3f} / {tuned.recall_at_k:.3f}"),
        (f"queries/s (batch of {args.queries})", f"{args.queries / sharded_s:,.0f}"),
        (
            "latency, 1 query (p50 / p95)",
            f"{lat[len(lat) // 2] * 1e3:.2f} / {lat[int(len(lat) * 0.95)] * 1e3:.2f} ms",
        ),
        (
            "ShardedIndex / plain faiss search time",
            f"{sharded_s / plain_s:.3f} ({sharded_s * 1e3:.1f} / {plain_s * 1e3:.1f} ms)",
        ),
        ("result overlap with the plain index", f"{same:.4f}"),
    ]
    print()
    print("| metric | value |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
