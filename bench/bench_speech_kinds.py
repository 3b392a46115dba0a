"""Speed of the three speech model kinds (samu, asr, fused) on the shipped demo clips, in audio-seconds per second.

    python bench/bench_speech_kinds.py [--clips 36] [--repeats 1] [--batch-size 8] [--model PATH]

Each kind is loaded through ``load_speech_encoder`` (``PATH``, ``asr:PATH``, ``fused:PATH``; default PATH: the
demo model), warmed up on one clip, then timed encoding the first ``--clips`` clips of
``miner/demo_assets/clips.tsv`` (held-out espeak-ng speech in 9 languages), best of ``--repeats``. The rate is
the encoder's own report (``last_speed``: audio seconds / wall seconds of one ``encode`` call). Whisper is told
nothing about the language (detected per clip), as ``miner mine`` without ``--lang``. As a sanity line, R@1
of each clip against the clips' own English translations (nearest of ``--clips`` candidates) is printed too.
Prints a markdown table. Whisper runs on CPU (CTranslate2 int8); the SAMU model on CUDA when available.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from typing import Any

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=36, help="Demo clips to encode (at most 36).")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default=None, help="SAMU model folder (default: the demo model).")
    ap.add_argument("--kinds", default="samu,asr,fused", help="Comma-separated kinds to time.")
    args = ap.parse_args()

    from miner.audio import load_audio
    from miner.demo import DEMO_ASSETS
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.text import load_text_encoder

    with open(DEMO_ASSETS / "clips.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[: args.clips]
    waves = [load_audio(DEMO_ASSETS / r["audio"]) for r in rows]
    audio_s = sum(len(w) for w in waves) / 16000
    folder = args.model
    text = load_text_encoder(f"paired:{folder or ''}")
    targets = text.encode([r["translation"] for r in rows])
    table = []
    for kind in args.kinds.split(","):
        spec = folder if kind == "samu" else (f"{kind}:{folder}" if folder else kind)
        t0 = time.perf_counter()
        enc: Any = load_speech_encoder(spec)
        load_s = time.perf_counter() - t0
        enc.encode(waves[:1], batch_size=args.batch_size)  # warm-up: first-call allocations, lazy imports
        best = None
        for _ in range(args.repeats):
            vecs = enc.encode(waves, batch_size=args.batch_size)
            speed = enc.last_speed
            if best is None or speed.seconds < best.seconds:
                best = speed
        assert best is not None
        r1 = float(np.mean(np.argmax(vecs @ targets.T, axis=1) == np.arange(len(rows))))
        label = f"{kind} (w={enc.weight:g})" if kind == "fused" else kind
        table.append((label, enc.model_id, load_s, best.seconds, best.audio_seconds_per_second, r1))
        del enc

    threads = os.cpu_count()
    print(
        f"{len(rows)} demo clips, {audio_s:.1f} s of audio; {platform.processor() or platform.machine()}, "
        f"{threads} CPUs; batch {args.batch_size}, best of {args.repeats}"
    )
    print()
    print(f"| kind | load (s) | encode (s) | audio-s per s | R@1 among the {len(rows)} translations |")
    print("|---|---|---|---|---|")
    for label, _model_id, load_s, enc_s, rate, r1 in table:
        print(f"| {label} | {load_s:.1f} | {enc_s:.1f} | {rate:.1f} | {r1:.2f} |")
    print()
    for label, model_id, *_ in table:
        print(f"{label}: {model_id}")


if __name__ == "__main__":
    main()
