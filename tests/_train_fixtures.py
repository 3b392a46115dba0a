"""Shared helpers of the training tests: a tiny multilingual corpus, its English sources and a config builder. The teacher itself is the ``spread_st_dir`` fixture of conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from miner.audio import write_audio
from tests.conftest import make_clip

SENTENCES = {
    "en": [
        "the cat sleeps",
        "a dog runs",
        "the dog sleeps on the sofa",
        "a cat runs on the house",
        "the house",
        "a dog sleeps",
    ],
    "fr": ["le chat dort", "le chien dort sur la maison", "la maison", "le chien"],
    "de": ["der hund schläft", "die katze schläft", "der hund", "die katze", "der hund schläft", "die katze"],
}


# English sources of the non-English sentences (the T3 targets).
ENGLISH = {
    "le chat dort": "the cat sleeps",
    "le chien dort sur la maison": "the dog sleeps on the house",
    "la maison": "the house",
    "le chien": "a dog",
    "der hund schläft": "a dog sleeps",
    "die katze schläft": "the cat sleeps",
    "der hund": "a dog",
    "die katze": "a cat",
}


def write_tiny_corpus(
    root: Path, seed: int = 7, seconds: tuple[float, float] = (0.3, 0.9), english: bool = False
) -> Path:
    """16 synthetic clips (WAV, 16 kHz) in ``root/audio`` and a TSV manifest ``root/train.tsv``.

    Columns: id, audio (relative), text, lang, duration, translation (= the text: transcript retrieval; with
    ``english``, the English source from ``ENGLISH`` for fr and de rows).
    """
    rng = np.random.default_rng(seed)
    rows = ["id\taudio\ttext\tlang\tduration\ttranslation"]
    for lang, texts in SENTENCES.items():
        for i, text in enumerate(texts):
            sec = float(np.round(rng.uniform(*seconds), 2))
            rel = f"audio/{lang}_{i}.wav"
            write_audio(root / rel, make_clip(rng, sec))
            translation = ENGLISH.get(text, text) if english else text
            rows.append(f"{lang}{i}\t{rel}\t{text}\t{lang}\t{sec}\t{translation}")
    manifest = root / "train.tsv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def read_metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def make_config(corpus: Path, backbone: Path, teacher: Path, out_dir: Path, **overrides: object):
    from miner.train.config import apply_overrides, load_config

    base = load_config(
        None, [f"train_manifest={corpus}", f"backbone={backbone}", f"teacher={teacher}", f"out_dir={out_dir}"]
    )
    settings = {
        "max_updates": 6,
        "head_only_updates": 3,
        "peak_lr": 3e-3,
        "batch_seconds": 2.0,
        "log_every": 1,
        "save_every": 0,
        "eval_every": 0,
        "num_workers": 0,
        "seed": 0,
        **overrides,
    }
    return apply_overrides(base, settings).validate()
