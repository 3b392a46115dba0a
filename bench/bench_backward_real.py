"""Backward kNN through an IVF index over the sources, on real embeddings: are the mined pairs those of flat?

    python bench/bench_backward_real.py --sources SRC.npy --targets TRG.npy [--k 4] [--mode max]

SRC.npy / TRG.npy: float32 (n, d) embeddings, e.g. the training cache of the demo model's teacher (e5 vectors
of transcripts in nine languages as sources, of their English sources as targets: real text-to-text mining), centred on the sources' mean like the demo model's space.
Both sides are mined with every target's backward kNN (``backward_targets="all"``, what ``max`` mode does
exactly), once with a flat index over the sources and once with IVF (``miner.knn.source_index``), and the pair
sets compared. Prints a markdown row per index.
"""

from __future__ import annotations

import argparse
import functools
import logging
import platform
import time

import numpy as np

from miner import knn as knn_module
from miner.knn import ivf_nlist, source_index
from miner.mine import mine_embeddings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--mode", default="max")
    ap.add_argument("--nprobe", default="16", help="comma list: IVF runs, one per nprobe")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    x = np.load(args.sources).astype(np.float32)
    y = np.unique(np.load(args.targets).astype(np.float32), axis=0)  # repeated targets would tie
    # The demo model's space: e5 centred on the mean training transcript (raw e5 vectors are all close).
    centre = x.mean(axis=0)
    x, y = x - centre, y - centre
    print(f"{platform.processor() or platform.machine()}; sources {x.shape}, distinct targets {y.shape}")
    print(f"IVF over the sources: nlist {ivf_nlist(len(x))}")
    print("| backward index | seconds | pairs | pairs equal to flat's |")
    print("|---|---|---|---|")
    reference: set[tuple[int, int]] | None = None
    runs = [("flat", None)] + [("ivf", int(p)) for p in args.nprobe.split(",")]
    for backward_index, nprobe in runs:
        if nprobe is not None:  # backward_knn looks source_index up in its module at call time
            knn_module.source_index = functools.partial(source_index, nprobe=nprobe)
        t = time.perf_counter()
        pairs = mine_embeddings(
            x, y, k=args.k, mode=args.mode, backward_targets="all", backward_index=backward_index
        )
        dt = time.perf_counter() - t
        found = {(i, j) for _, i, j in pairs}
        reference = found if reference is None else reference
        same = len(found & reference) / max(1, len(reference))
        name = backward_index if nprobe is None else f"ivf, nprobe {nprobe}"
        print(f"| {name} | {dt:.1f} | {len(pairs)} | {same:.4f} |")


if __name__ == "__main__":
    main()
