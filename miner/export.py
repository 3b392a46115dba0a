"""Write mined pairs as corpora that speech-translation toolkits read.

``pairs.tsv`` (written by ``miner mine``) is the source of truth: score, audio, start, duration, text, text_id,
direction. ``export_pairs`` cuts each aligned segment into its own 16 kHz FLAC file and writes the manifest of:

- ``fairseq-s2t``: ``train.tsv`` with the columns fairseq's speech-to-text data loader reads
  (id, audio, n_frames, tgt_text, speaker);
- ``hf-audiofolder``: ``data/*.flac`` plus ``metadata.csv`` with ``file_name`` first, as Hugging Face
  ``datasets.load_dataset("audiofolder", data_dir=...)`` expects;
- ``moses``: line-aligned ``train.audio`` (segment file paths) and ``train.<lang>`` (text), as Moses-style
  parallel corpora lay out sides.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from miner.audio import AudioError, load_audio, write_audio
from miner.segment import cut

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("fairseq-s2t", "hf-audiofolder", "moses")
PAIR_COLUMNS = ("score", "audio", "start", "duration", "text", "text_id", "direction")


@dataclass(frozen=True)
class Pair:
    """One row of ``pairs.tsv``."""

    score: float
    audio: str
    start: float
    duration: float
    text: str
    text_id: str
    direction: str


def write_pairs_tsv(path: Path, pairs: list[Pair]) -> None:
    """Write ``pairs.tsv`` atomically (temp file then rename); tabs and newlines in text become spaces."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        f.write("\t".join(PAIR_COLUMNS) + "\n")
        for p in pairs:
            text = " ".join(p.text.split())
            f.write(
                f"{p.score:.6f}\t{p.audio}\t{p.start:.3f}\t{p.duration:.3f}\t{text}\t{p.text_id}\t{p.direction}\n"
            )
    os.replace(tmp, path)


def read_pairs_tsv(path: Path) -> Iterator[Pair]:
    """Read ``pairs.tsv`` as written by :func:`write_pairs_tsv`."""
    with path.open(encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\n").split("\t")
        if tuple(header) != PAIR_COLUMNS:
            raise ValueError(
                f"{path} is not a pairs.tsv file: header {header}, expected {list(PAIR_COLUMNS)}"
            )
        for n, line in enumerate(f, start=2):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != len(PAIR_COLUMNS):
                raise ValueError(
                    f"{path}:{n}: expected {len(PAIR_COLUMNS)} tab-separated columns, got {len(cols)}"
                )
            yield Pair(float(cols[0]), cols[1], float(cols[2]), float(cols[3]), cols[4], cols[5], cols[6])


def export_pairs(
    pairs_tsv: Path, out_dir: Path, fmt: str, *, min_score: float | None = None, target_lang: str = "en"
) -> int:
    """Cut aligned segments into FLAC files and write the manifest of ``fmt``.

    Args:
        pairs_tsv: the ``pairs.tsv`` of a mining run.
        out_dir: destination folder (created); segment files go to ``out_dir/data``.
        fmt: one of ``fairseq-s2t``, ``hf-audiofolder``, ``moses``.
        min_score: keep pairs scoring strictly above this (default: all).
        target_lang: language code used in file names of the text side (moses).

    Returns:
        Number of exported pairs. Segments whose audio cannot be read are skipped with a warning.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    pairs = [p for p in read_pairs_tsv(pairs_tsv) if min_score is None or p.score > min_score]
    data = out_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, Path, int, Pair]] = []
    cache: tuple[str, object] | None = None
    for i, p in enumerate(tqdm(sorted(pairs, key=lambda q: (q.audio, q.start)), desc="export", unit="seg")):
        try:
            if cache is None or cache[0] != p.audio:
                cache = (p.audio, load_audio(p.audio))
            wav = cut(cache[1], p.start, p.duration)  # type: ignore[arg-type]
        except (AudioError, ValueError) as exc:
            log.warning("skipping %s @ %.2f: %s", p.audio, p.start, exc)
            continue
        seg_id = f"seg{i:07d}"
        path = write_audio(data / f"{seg_id}.flac", wav)
        rows.append((seg_id, path, len(wav), p))
    _write_manifest(out_dir, fmt, rows, target_lang)
    return len(rows)


def _write_manifest(out_dir: Path, fmt: str, rows: list[tuple[str, Path, int, Pair]], lang: str) -> None:
    def atomic(name: str) -> tuple[Path, Path]:
        final = out_dir / name
        return final, final.with_name(final.name + ".tmp")

    if fmt == "fairseq-s2t":
        final, tmp = atomic("train.tsv")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
            w.writerow(["id", "audio", "n_frames", "tgt_text", "speaker"])
            for seg_id, path, n, p in rows:
                w.writerow([seg_id, str(path.resolve()), n, " ".join(p.text.split()), Path(p.audio).stem])
        os.replace(tmp, final)
    elif fmt == "hf-audiofolder":
        final, tmp = atomic("metadata.csv")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["file_name", "text", "score", "source_audio", "start", "duration", "text_id"])
            for _, path, _, p in rows:
                w.writerow(
                    [f"data/{path.name}", p.text, f"{p.score:.6f}", p.audio, p.start, p.duration, p.text_id]
                )
        os.replace(tmp, final)
    else:
        audio_final, audio_tmp = atomic("train.audio")
        text_final, text_tmp = atomic(f"train.{lang}")
        with audio_tmp.open("w", encoding="utf-8") as fa, text_tmp.open("w", encoding="utf-8") as ft:
            for _, path, _, p in rows:
                fa.write(f"{path.resolve()}\n")
                ft.write(" ".join(p.text.split()) + "\n")
        os.replace(audio_tmp, audio_final)
        os.replace(text_tmp, text_final)
