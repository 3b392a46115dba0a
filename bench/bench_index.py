"""Benchmark the index package: build and search N synthetic 768-d vectors with the auto-chosen factory.

Reports build time, peak memory, queries/s at the nprobe that reaches recall@10 >= 0.95 on held-out queries,
and the time ratio of ``ShardedIndex.search`` to one plain faiss index holding the same vectors (same
trained quantizer, same queries, same nprobe, same faiss threads), measured in the same run. ``--load``
picks how the ShardedIndex is loaded: ``mmap`` (shards memory-mapped and searched one by one, the default of
``ShardedIndex.load``), ``ram`` (``mmap=False``: IVF shards merged into one in-memory index) or ``both``.

    python bench/bench_index.py                 # 1.6M vectors: ~10 min build, peak RSS ~17 GiB with both loads
    python bench/bench_index.py --n 200000 --shard-size 50000
    python bench/bench_index.py --n 1600000 --shard-size 400000 --folder runs/bench/idx1600k --reuse
                                                # search an earlier build again (nothing in it is written)

Timing: one untimed warm-up search per contender, then ``--repeat`` rounds in which the plain index and each
load mode are timed in turn (best kept): interleaving spreads the load of other processes over all of them.

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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.build import ShardWriter  # noqa: E402
from index.factory import choose_factory, make_index, recall_at, tune_nprobe  # noqa: E402
from index.manifest import MANIFEST_FILE, Manifest  # noqa: E402
from index.sharded import ShardedIndex  # noqa: E402

CHUNK = 50_000
DEFAULT_SHARD_SIZE = 500_000
LOADS = {"mmap": True, "ram": False}  # --load name -> ShardedIndex.load(mmap=...)

logger = logging.getLogger("bench_index")


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

    def chunk(self, i: int) -> tuple[int, np.ndarray]:
        """(first global id, (<= CHUNK, dim) float32 unit vectors) of chunk ``i``."""
        start = i * CHUNK
        return start, self._draw(min(CHUNK, self.n - start), (self.seed, 1, i))

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(-(-self.n // CHUNK)):
            yield self.chunk(i)

    def queries(self, nq: int) -> np.ndarray:
        return self._draw(nq, (self.seed, 2))  # held out: not in the database


def exact_topk(data: Synthetic, xq: np.ndarray, k: int) -> np.ndarray:
    heap = faiss.ResultHeap(len(xq), k, keep_max=True)
    for start, x in data.chunks():
        dist, ids = faiss.knn(xq, x, k, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(dist, ids + start)
    heap.finalize()
    return heap.I


def interleaved_best(
    fns: dict[str, Callable[[], Any]], repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time each function: one untimed warm-up each, then ``repeat`` rounds calling each in turn.

    Returns (wall seconds, CPU seconds of this process) of every timed call per name. Take the min of each:
    the call least disturbed by other processes. CPU time counts the work done (all faiss threads) and barely
    moves when other processes take the cores; wall time is what a caller waits.
    """
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeat):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        logger.info(
            "round %d (wall / CPU s): %s",
            r + 1,
            ", ".join(f"{n} {wall[n][-1]:.2f} / {cpu[n][-1]:.2f}" for n in fns),
        )
    return wall, cpu


def p50_p95(seconds: list[float]) -> str:
    """'p50 / p95 ms' of sorted timings."""
    return f"{seconds[len(seconds) // 2] * 1e3:.2f} / {seconds[int(len(seconds) * 0.95)] * 1e3:.2f} ms"


def build(folder: Path, data: Synthetic, factory: str, shard_size: int, args: argparse.Namespace) -> Manifest:
    """Write the database (an unfinished build in ``folder`` is resumed)."""
    writer = ShardWriter(
        folder,
        data.dim,
        factory,
        space_id=f"bench-{data.dim}",
        store=False,
        shard_size=shard_size,
        tune_queries=1000,
        tune_k=args.k,
        target_recall=args.target_recall,
    )
    done = writer.completed_count()  # > 0 when resuming: those vectors are in committed shards
    for start, x in data.chunks():
        if start + len(x) > done:
            writer.add(x[max(0, done - start) :])
    return writer.close()


def check_reused(folder: Path, data: Synthetic, factory: str, shard_size: int | None) -> Manifest:
    """The manifest of a finished build in ``folder``, refused unless it was built from these args."""
    manifest = Manifest.load(folder)
    wanted = {"vectors": data.n, "dim": data.dim, "factory": factory}
    found = {"vectors": manifest.ntotal, "dim": manifest.dim, "factory": manifest.factory}
    if shard_size is not None:
        wanted["shard size"] = shard_size
        found["shard size"] = manifest.build.get("shard_size")
    if not manifest.complete or found != wanted:
        raise SystemExit(
            f"{folder}: cannot reuse this database (complete={manifest.complete}, {found}; the run asks for "
            f"{wanted}): pass the arguments it was built with, or a new --folder"
        )
    return manifest


def check_vectors(index: ShardedIndex, data: Synthetic, per_chunk: int = 4) -> None:
    """Raise SystemExit unless vectors of the first and last chunk are found under their own ids.

    Each is searched with k=1 and nprobe=1 (a stored vector lies in the list of its nearest centroid), so this
    catches a reused database built from other data in seconds.
    """
    for i in sorted({0, (data.n - 1) // CHUNK}):
        start, x = data.chunk(i)
        rows = np.r_[0:per_chunk, len(x) - per_chunk : len(x)]
        scores, ids = index.search(x[rows], 1, nprobe=1)
        if not (np.array_equal(ids[:, 0], start + rows) and (scores[:, 0] > 0.999).all()):
            raise SystemExit(
                f"{index.folder}: vectors {(start + rows).tolist()} came back as ids {ids[:, 0].tolist()}: the "
                "database does not hold this run's synthetic data; use a new --folder"
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_600_000, help="database vectors (default 1.6M)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=1000, help="held-out queries")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument(
        "--shard-size", type=int, default=None, help=f"vectors per shard (default {DEFAULT_SHARD_SIZE:,})"
    )
    p.add_argument(
        "--memory-gb", type=float, default=None, help="index memory budget (default: half the RAM)"
    )
    p.add_argument("--factory", default=None, help="override the auto-chosen factory")
    p.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's)")
    p.add_argument("--repeat", type=int, default=3, help="timed search rounds (best kept)")
    p.add_argument(
        "--load",
        choices=[*LOADS, "both"],
        default="both",
        help="ShardedIndex load mode(s) to time against the plain index: mmap (ShardedIndex.load's default: "
        "shards mapped, searched one by one), ram (mmap=False: IVF shards merged) or both (default)",
    )
    p.add_argument(
        "--nprobe", type=int, default=None, help="search with this nprobe instead of tuning it on the queries"
    )
    p.add_argument(
        "--folder",
        default=None,
        help="parent of the database folder <folder>/db (default: a temp folder, removed after); an "
        "unfinished build there is resumed",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="search the finished database in <folder>/db instead of building (checked against --n, --dim, "
        "the factory and a sample of the vectors; nothing in it is written)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.reuse and not args.folder:
        p.error("--reuse needs --folder (the parent of the database folder db/)")
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    loads = list(LOADS) if args.load == "both" else [args.load]

    budget = (
        int(args.memory_gb * 2**30)
        if args.memory_gb
        else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    )
    choice = choose_factory(args.n, args.dim, budget)
    factory = args.factory or choice.factory
    tmp = None if args.folder else tempfile.mkdtemp(prefix="bench_index_")
    folder = Path(args.folder or str(tmp)) / "db"
    data = Synthetic(args.n, args.dim)

    # build, or reuse a finished build
    built = (folder / MANIFEST_FILE).is_file() and Manifest.load(folder).complete
    if built and not args.reuse:
        raise SystemExit(f"{folder} holds a finished database: pass --reuse to search it, or a new --folder")
    t0 = time.perf_counter()
    if args.reuse and built:
        manifest = check_reused(folder, data, factory, args.shard_size)
        build_row = f"reused {folder} (built {manifest.created})"
    else:
        manifest = build(folder, data, factory, args.shard_size or DEFAULT_SHARD_SIZE, args)
        build_s = time.perf_counter() - t0
        build_row = f"{build_s:.1f} s ({args.n / build_s:,.0f} vectors/s)"
    build_peak = peak_rss_gib()

    indexes: dict[str, ShardedIndex] = {}
    load_s: dict[str, float] = {}
    for name in sorted(loads, key=lambda n: n != "ram"):  # ram first: the faster one tunes nprobe
        t0 = time.perf_counter()
        indexes[name] = ShardedIndex.load(folder, mmap=LOADS[name])
        load_s[name] = time.perf_counter() - t0
    first = next(iter(indexes.values()))
    if args.reuse and built:
        check_vectors(first, data)
    load_peak = peak_rss_gib()

    # ground truth on held-out queries, then the nprobe reaching the target on them
    xq = data.queries(args.queries)
    gt = exact_topk(data, xq, args.k)
    t0 = time.perf_counter()
    if args.nprobe is None:
        tuned = tune_nprobe(first, xq, k=args.k, target_recall=args.target_recall, gt_ids=gt)
        nprobe = tuned.nprobe
        nprobe_row = f"{nprobe} (tuned in {time.perf_counter() - t0:.1f} s)"
    else:
        nprobe = args.nprobe if manifest.nlist else None
        nprobe_row = f"{nprobe} (given)"
    ids = first.search(xq, args.k, nprobe=nprobe)[1]
    recall_1, recall_k = recall_at(gt, ids, 1), recall_at(gt, ids, args.k)

    # one plain faiss index over the same vectors (same trained quantizer), searched directly
    plain = (
        faiss.read_index(str(folder / "trained.faiss")) if manifest.nlist else make_index(factory, args.dim)
    )
    for _, x in data.chunks():
        plain.add(x)
    params = faiss.SearchParametersIVF(nprobe=nprobe) if nprobe else None  # type: ignore[call-arg]
    plain_ids = plain.search(xq, args.k, params=params)[1]
    overlap = {
        name: recall_at(plain_ids, idx.search(xq, args.k, nprobe=nprobe)[1], args.k)
        for name, idx in indexes.items()
    }

    def searcher(index: ShardedIndex) -> Callable[[], Any]:
        return lambda: index.search(xq, args.k, nprobe=nprobe)

    contenders: dict[str, Callable[[], Any]] = {"plain": lambda: plain.search(xq, args.k, params=params)}
    contenders.update((name, searcher(indexes[name])) for name in loads)
    times, cpu = interleaved_best(contenders, args.repeat)
    best = {name: min(t) for name, t in times.items()}
    best_cpu = {name: min(t) for name, t in cpu.items()}

    def one_query(name: str, q: np.ndarray) -> Any:
        if name == "plain":
            return plain.search(q, args.k, params=params)
        return indexes[name].search(q, args.k, nprobe=nprobe)

    latency: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(min(50, len(xq))):  # interleaved like the batches
        for name in contenders:
            t0 = time.perf_counter()
            one_query(name, xq[i : i + 1])
            latency[name].append(time.perf_counter() - t0)
    lat = {name: sorted(t) for name, t in latency.items()}
    search_peak = peak_rss_gib()

    shard_sizes = sorted({s.count for s in manifest.shards})
    rows = [
        ("vectors x dim", f"{args.n:,} x {args.dim}"),
        ("factory", f"{factory} ({choice.reason})" if not args.factory else factory),
        ("shards", f"{len(manifest.shards)} x <= {max(shard_sizes, default=0):,}"),
        ("faiss threads", str(faiss.omp_get_max_threads())),
        ("build time", build_row),
        (
            "peak RSS after build",
            f"{build_peak:.2f} GiB (estimate for the index: {choice.est_bytes / 2**30:.2f} GiB)",
        ),
        ("peak RSS after loading / after search", f"{load_peak:.2f} / {search_peak:.2f} GiB"),
        (
            "nprobe (build-time tuning)",
            f"{manifest.nprobe} (recall@{args.k} {manifest.build.get('tuning', {}).get('recall_at_k', 1.0)})",
        ),
        (f"nprobe for recall@{args.k} >= {args.target_recall} (held-out)", nprobe_row),
        (f"recall@1 / recall@{args.k}", f"{recall_1:.3f} / {recall_k:.3f}"),
        (
            f"plain faiss search time, {args.queries} queries (best / median of {args.repeat})",
            f"{best['plain']:.2f} / {statistics.median(times['plain']):.2f} s (CPU {best_cpu['plain']:.2f} s)",
        ),
        ("plain faiss latency, 1 query (p50 / p95)", p50_p95(lat["plain"])),
    ]
    for name in loads:
        rows += [
            (
                f"[{name}] load time",
                f"{load_s[name]:.1f} s ({indexes[name].searched_indexes} faiss index(es) searched)",
            ),
            (f"[{name}] queries/s (batch of {args.queries})", f"{args.queries / best[name]:,.0f}"),
            (f"[{name}] latency, 1 query (p50 / p95)", p50_p95(lat[name])),
            (
                f"[{name}] ShardedIndex / plain faiss search time",
                f"**{best[name] / best['plain']:.3f}** ({best[name]:.2f} / {best['plain']:.2f} s; median "
                f"{statistics.median(times[name]):.2f} s)",
            ),
            (
                f"[{name}] ShardedIndex / plain faiss CPU time",
                f"{best_cpu[name] / best_cpu['plain']:.3f} ({best_cpu[name]:.2f} / {best_cpu['plain']:.2f} s)",
            ),
            (f"[{name}] result overlap with the plain index", f"{overlap[name]:.4f}"),
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
