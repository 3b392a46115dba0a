"""Dump, per clip of several query sets, what a fusion gate could look at, and whether each weight finds the gold.

For each NAME:QUERIES:DB set: bool hits at every weight of ``FUSION_GRID`` (``top1_hits`` of the fused vector),
Whisper's confidence, the clip's duration, the cosine between the SAMU and the cascade vectors (agreement), and
the language. One ``.npz`` per set under --out; `scripts/experiments/gate_search.py` chooses gates on the dev sets
and scores them on the test sets. Transcripts come from the transcript cache, so a rerun costs the SAMU pass only.

    python scripts/experiments/gate_features.py --model miner/demo_assets/model --out runs/gate_features \
        --set dev_open:work/open_eval/queries_dev_asr.tsv:work/open_eval/en_db.txt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from miner.encoders.fusion import FUSION_GRID, fuse
from miner.encoders.samu import load_speech_encoder
from miner.encoders.text import load_text_encoder_for
from miner.eval_databases import open_database
from miner.evaluate import top1_hits
from miner.train.data import load_utterance_audio, read_manifest

log = logging.getLogger("gate_features")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="SAMU model folder")
    ap.add_argument("--set", action="append", required=True, help="NAME:QUERIES:DB (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fused: Any = load_speech_encoder(f"fused,w=0.5:{args.model}")
    text_encoder = load_text_encoder_for(fused)
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.set:
        name, manifest, db = spec.split(":", 2)
        utts = read_manifest(Path(manifest), require_text=False, require_lang=True)
        langs = [u.lang for u in utts]
        waves = [load_utterance_audio(u) for u in utts]
        search, id_to_text = open_database(db, text_encoder)
        fused.encode_with_transcripts(waves, batch_size=args.batch_size, progress=False, langs=langs)
        samu, asr = fused.last_parts
        gold = [u.translation for u in utts]
        hits = np.stack([top1_hits(fuse(samu, asr, w), search, id_to_text, gold) for w in FUSION_GRID])
        conf = fused.last_confidence
        np.savez(
            args.out / f"{name}.npz",
            hits=hits,  # bool (len(FUSION_GRID), n)
            weights=np.asarray(FUSION_GRID),
            confidence=np.full(len(utts), np.nan) if conf is None else np.asarray(conf, np.float64),
            seconds=np.asarray([len(w) / 16000 for w in waves]),
            agreement=np.sum(samu * asr, axis=1),
            langs=np.asarray(langs),
        )
        log.info(
            "%s: %d clips, R@1 SAMU %.1f, ASR %.1f",
            name,
            len(utts),
            100 * hits[-1].mean(),
            100 * hits[0].mean(),
        )


if __name__ == "__main__":
    main()
