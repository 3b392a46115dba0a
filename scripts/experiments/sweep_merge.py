"""Choose the weight of a merged SAMU head (`miner merge`) on several test sets in one pass per set.

The merged heads share a frozen backbone, so the backbone runs once per batch and every weight's head reads the
same frames: a sweep of N weights costs about one `miner eval retrieval` instead of N. Scores come from the same
functions `miner eval retrieval` uses (``evaluate_retrieval``, the cached corpus embeddings); check the chosen
weight with `miner eval retrieval` on the saved model.

    python scripts/experiments/sweep_merge.py --old miner/demo_assets/model --new miner/demo_assets/model_open \
        --weights 0,0.3,0.5,0.7,1 --set catalog:work/demo_run/queries_x_en.tsv:work/demo_run/en_db.txt \
        --json runs/merge_sweep.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from miner.encoders.batching import budget_batches
from miner.encoders.samu import SpeechEncoder
from miner.encoders.text import CenteredTextEncoder, load_text_encoder
from miner.eval_databases import corpus_database
from miner.evaluate import evaluate_retrieval
from miner.train.data import load_utterance_audio, read_manifest
from miner.train.merge import merge_heads

log = logging.getLogger("sweep_merge")


def embed_all(heads: list[SpeechEncoder], waves: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Each head's float32 (n, dim) unit rows for ``waves``; the shared backbone runs once per batch."""
    backbone = heads[0].backbone
    outs = [np.zeros((len(waves), h.dim), np.float32) for h in heads]
    batches = list(budget_batches([len(w) for w in waves], batch_size, None))
    t0 = time.time()
    with torch.inference_mode():
        for j, idx in enumerate(batches):
            frames, mask = backbone(backbone.prepare([waves[i] for i in idx]))
            for h, out in zip(heads, outs, strict=True):
                out[idx] = torch.nn.functional.normalize(h.head(frames, mask).float(), dim=-1).numpy()
            if j % 50 == 0:
                log.info("batch %d/%d (%.0f s)", j + 1, len(batches), time.time() - t0)
    return outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--set", action="append", required=True, help="NAME:QUERIES:DB (repeatable)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_grad_enabled(False)
    old, new = SpeechEncoder.from_pretrained(args.old), SpeechEncoder.from_pretrained(args.new)
    weights = [float(w) for w in args.weights.split(",")]
    heads = [merge_heads(old, new, w) for w in weights]
    base = load_text_encoder(old.config.teacher)
    texts = [
        CenteredTextEncoder(base, np.asarray(h.config.extra["text_center"], np.float32), h.space_id)
        for h in heads
    ]
    results: dict[str, dict[str, object]] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for spec in args.set:
        name, queries, db = spec.split(":")
        utts = read_manifest(Path(queries), require_lang=True)
        waves = [load_utterance_audio(u) for u in utts]
        gold = [u.translation for u in utts]
        langs = [u.lang for u in utts]
        durations = [u.duration for u in utts]
        vectors = embed_all(heads, waves, args.batch_size)
        results[name] = {}
        for w, te, q in zip(weights, texts, vectors, strict=True):
            search, id_to_text = corpus_database(Path(db), te)
            r = evaluate_retrieval(q, search, id_to_text, gold, langs, k=5, durations=durations)
            results[name][str(w)] = r
            log.info("%s w=%.2f: R@1 %.1f R@5 %.1f", name, w, 100 * r["avg"]["r1"], 100 * r["avg"]["r5"])
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    for name, by_w in results.items():
        row = "  ".join(f"w={w}: {100 * r['avg']['r1']:.1f}" for w, r in by_w.items())  # type: ignore[index]
        print(f"{name}: {row}")


if __name__ == "__main__":
    main()
