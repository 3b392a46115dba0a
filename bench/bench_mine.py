"""Time the margin step (forward kNN, backward kNN of candidate targets, scoring, one-to-one) at scale.

    python bench/bench_mine.py --db 1600000 --sources 10000,30000,100000 [--dim 768] [--nlist 4096]
        [--backward-index flat,ivf]

Synthetic normalised vectors; the database is an IVF-Flat ShardedIndex-like search (faiss IVF, nprobe fixed)
because exact search over 1.6M is what a real run avoids; backward neighbourhoods are computed only for the
targets that appear among the sources' candidates (``backward_targets="candidates"``). Prints per-stage times
(the INFO line of ``mine_embeddings``) and how they grow with the number of sources. With several
``--backward-index`` values the same sources are mined with each, and the pairs are compared with the first
(flat: exact backward kNN).
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import time

import faiss
import numpy as np

from miner.mine import mine_embeddings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=int, default=1_600_000)
    ap.add_argument("--sources", default="10000,30000,100000")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backward-index", default="flat", help="comma list of auto | flat | ivf")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(args.seed)
    d = args.dim
    # Clustered data (like real embeddings): 2,000 centres, noise around them.
    centres = rng.standard_normal((2000, d)).astype(np.float32)
    t = time.perf_counter()
    y = np.empty((args.db, d), np.float32)
    for lo in range(0, args.db, 100_000):
        n = min(100_000, args.db - lo)
        y[lo : lo + n] = centres[rng.integers(0, 2000, n)] + 0.7 * rng.standard_normal((n, d)).astype(
            np.float32
        )
    faiss.normalize_L2(y)
    quant = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quant, d, args.nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(y[rng.choice(args.db, min(args.db, 64 * args.nlist), replace=False)])
    index.add(y)
    params = faiss.SearchParametersIVF(nprobe=args.nprobe)
    t_build = time.perf_counter() - t
    print(f"db {args.db} x {d}: built IVF{args.nlist},Flat in {t_build:.0f} s")

    def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return index.search(q, k, params=params)

    print(
        f"machine: {platform.processor() or platform.machine()}, {faiss.omp_get_max_threads()} threads, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        "| sources | backward index | forward+backward+margin (s) | pairs | same pairs as the first | "
        "seconds per 1k sources | peak RSS (GB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in [int(s) for s in args.sources.split(",")]:
        # Half the sources are noisy copies of database rows (true pairs), half are fresh points.
        idx = rng.choice(args.db, n // 2, replace=False)
        x = np.concatenate(
            [
                y[idx] + 0.3 * rng.standard_normal((n // 2, d)).astype(np.float32) / np.sqrt(d),
                centres[rng.integers(0, 2000, n - n // 2)]
                + 0.7 * rng.standard_normal((n - n // 2, d)).astype(np.float32),
            ]
        )
        first: set[tuple[int, int]] | None = None
        for backward_index in args.backward_index.split(","):
            t = time.perf_counter()
            pairs = mine_embeddings(
                x,
                y,
                k=args.k,
                search_fn=search,
                backward_targets="candidates",
                threshold=1.0,
                backward_index=backward_index,
            )
            dt = time.perf_counter() - t
            got = {(s, t) for _, s, t in pairs}
            first = got if first is None else first
            same = len(got & first) / max(len(first), 1)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
            print(
                f"| {n} | {backward_index} | {dt:.1f} | {len(pairs)} | {same:.4f} | {1000 * dt / n:.2f} | "
                f"{rss:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
