"""Speak the parallel sentences with espeak-ng: 16 kHz mono FLAC clips and per-split manifests.

Reads ``parallel.tsv`` (from ``gather_parallel_text.py``), speaks every translation (and the English source)
with a voice variant, rate and pitch drawn from an RNG seeded by the utterance id, and writes::

    <data>/audio/<lang>/<id>.flac          16 kHz mono PCM_16 FLAC
    <data>/{train,dev,test}.tsv            id  audio  lang  text  translation  meaning_id  duration  synth  voice
                                           augment

``audio`` is relative to the manifest's folder; ``translation`` is the English source sentence. Manifests are
plain TSV without quoting (no field holds a tab or newline) and list only clips that exist.

Work is ordered test -> dev -> train, and train by ``--langs`` order (English last), so a run that is stopped
early leaves the most useful part done. It is resumable: existing clips are skipped, clips are written to a
temporary name and renamed. Run it niced, with at most two workers on a shared machine::

    nice -n 10 python scripts/synthesize_speech.py --data work/demo_data --jobs 2
    python scripts/synthesize_speech.py --data work/demo_data --benchmark 200   # throughput only
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from miner.voices.espeak import DEFAULT_WPM, ESPEAK, espeak_pitch_ratio, espeak_wave
from miner.voices.manifest import voice_cell

log = logging.getLogger("synthesize_speech")

SAMPLE_RATE = 16000
# espeak-ng voice per language column; English alternates between American and British voices.
VOICES: dict[str, tuple[str, ...]] = {
    "en": ("en-us", "en-gb"),
    "fr": ("fr-fr",),
    "de": ("de",),
    "es": ("es",),
    "it": ("it",),
    "pt": ("pt-br",),
    "nl": ("nl",),
    "pl": ("pl",),
    "ru": ("ru",),
    "sv": ("sv",),
    "cs": ("cs",),
    "ca": ("ca",),
    "uk": ("uk",),
    "tr": ("tr",),
    "hu": ("hu",),
}
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 5))
RATE_RANGE = (130, 190)  # words per minute
PITCH_RANGE = (30, 70)  # espeak-ng 0..99
SPLIT_ORDER = ("test", "dev", "train")
MANIFEST_HEADER = (
    "id", "audio", "lang", "text", "translation", "meaning_id", "duration", "synth", "voice", "augment",
)  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One clip to synthesize.

    Attributes:
        utt_id: ``<meaning_id>_<lang>``, also the file stem.
        lang: language column of ``parallel.tsv`` (``en`` for the English source).
        text: sentence to speak.
        translation: the English source sentence.
        meaning_id: id shared by all translations of one English sentence.
        split: ``train`` / ``dev`` / ``test``.
    """

    utt_id: str
    lang: str
    text: str
    translation: str
    meaning_id: str
    split: str

    @property
    def rel_audio(self) -> str:
        """Audio path relative to the data folder (where the manifests are)."""
        return f"audio/{self.lang}/{self.utt_id}.flac"


def voice_settings(utt_id: str, lang: str, seed: int) -> tuple[str, int, int]:
    """``(voice+variant, rate wpm, pitch)`` for one utterance from an RNG seeded by ``seed`` and ``utt_id``.

    Raises:
        ValueError: no espeak-ng voice is configured for ``lang``.
    """
    if lang not in VOICES:
        raise ValueError(
            f"no espeak-ng voice for language {lang!r}; add it to VOICES (known: {sorted(VOICES)})"
        )
    rng = random.Random(f"{seed}:{utt_id}")
    voice = rng.choice(VOICES[lang])
    variant = rng.choice(VARIANTS)
    return f"{voice}+{variant}", rng.randint(*RATE_RANGE), rng.randint(*PITCH_RANGE)


def render(job: Job, data_dir: Path, seed: int) -> tuple[str, float | None, bool]:
    """Synthesize one clip unless it exists.

    Returns:
        ``(utt_id, duration in seconds or None on failure, True if the clip was synthesized now)``.

    The FLAC is written to ``<id>.tmp.flac`` and renamed, so a killed run never leaves a truncated clip.
    """
    path = data_dir / job.rel_audio
    if path.exists():
        try:
            return job.utt_id, sf.info(str(path)).frames / SAMPLE_RATE, False
        except RuntimeError:
            log.warning("unreadable clip %s: synthesizing it again", path)
    try:
        voice, rate, pitch = voice_settings(job.utt_id, job.lang, seed)
        samples, sr = espeak_wave(job.text, voice, rate, pitch)
        audio = soxr.resample(samples, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else samples
        audio = np.clip(audio, -1.0, 1.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.flac")
        sf.write(str(tmp), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
        return job.utt_id, len(audio) / SAMPLE_RATE, True
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        log.warning("failed %s (%s): %s", job.utt_id, job.lang, exc)
        return job.utt_id, None, True


def read_parallel(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read ``parallel.tsv``; return its language columns and its rows as dicts.

    Raises:
        ValueError: the file lacks the ``meaning_id`` / ``en`` / ``split`` columns.
    """
    with path.open(encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        missing = {"meaning_id", "source", "en", "split"} - set(header)
        if missing:
            raise ValueError(f"{path} lacks columns {sorted(missing)}: write it with gather_parallel_text.py")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"), strict=True)) for line in fh if line.strip()]
    langs = [c for c in header if c not in {"meaning_id", "source", "en", "split"}]
    return langs, rows


def plan_jobs(
    rows: list[dict[str, str]],
    langs: Iterable[str],
    splits: Iterable[str],
    en_splits: Iterable[str],
    max_train_per_lang: int = 0,
) -> list[tuple[str, str, list[Job]]]:
    """Jobs grouped as ``(split, lang, jobs)`` in priority order.

    Order: splits in ``SPLIT_ORDER`` (test first), and within a split the languages in the given order, English
    last. English is spoken only for ``en_splits``. ``max_train_per_lang`` > 0 keeps, per language, the train
    meanings with the smallest ids (a hash: a random but stable subset shared across languages).
    """
    langs, splits, en_splits = list(langs), set(splits), set(en_splits)
    groups = []
    for split in SPLIT_ORDER:
        if split not in splits:
            continue
        split_rows = [r for r in rows if r["split"] == split]
        for lang in [*langs, *(["en"] if split in en_splits else [])]:
            jobs = [
                Job(f"{r['meaning_id']}_{lang}", lang, r[lang], r["en"], r["meaning_id"], split)
                for r in split_rows
                if r.get(lang)
            ]
            if split == "train" and max_train_per_lang > 0:
                jobs = sorted(jobs, key=lambda j: j.meaning_id)[:max_train_per_lang]
            if jobs:
                groups.append((split, lang, jobs))
    return groups


def write_manifest(path: Path, jobs: list[Job], durations: dict[str, float], seed: int = 0) -> int:
    """Write one split manifest (temp file + rename) with the jobs whose clip exists; return its row count.

    ``synth`` is ``espeak``, ``voice`` the clip's voice with its rate and pitch as ``miner.voices`` multipliers
    (``en-us+m3;rate=0.857;pitch=0.956``: 150 words/min, ``-p`` 45), ``augment`` ``none``.
    """
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("\t".join(MANIFEST_HEADER) + "\n")
        for job in jobs:
            dur = durations.get(job.utt_id)
            if dur is None:
                continue
            voice, rate, pitch = voice_settings(job.utt_id, job.lang, seed)
            fields = (
                job.utt_id,
                job.rel_audio,
                job.lang,
                job.text,
                job.translation,
                job.meaning_id,
                f"{dur:.3f}",
                "espeak",
                voice_cell(voice, round(rate / DEFAULT_WPM, 3), espeak_pitch_ratio(pitch)),
                "none",
            )
            fh.write("\t".join(fields) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def remove_stale_clips(data_dir: Path, groups: list[tuple[str, str, list[Job]]]) -> int:
    """Delete clips whose text changed since the last run (per the old manifests) and leftover temp files.

    Clip names depend only on meaning and language, so after ``parallel.tsv`` is regenerated a kept clip could
    speak an old translation; the previous manifests tell which texts the existing clips speak.

    Returns:
        The number of stale clips removed.
    """
    planned = {job.utt_id: job for _, _, group in groups for job in group}
    removed = 0
    for tmp in (data_dir / "audio").glob("*/*.tmp.flac"):  # left by a killed run
        tmp.unlink(missing_ok=True)
    for split in SPLIT_ORDER:
        manifest = data_dir / f"{split}.tsv"
        if not manifest.exists():
            continue
        with manifest.open(encoding="utf-8") as fh:
            header = fh.readline().rstrip("\n").split("\t")
            for line in fh:
                row = dict(zip(header, line.rstrip("\n").split("\t"), strict=True))
                job = planned.get(row.get("id", ""))
                if job is not None and job.text != row.get("text"):
                    (data_dir / job.rel_audio).unlink(missing_ok=True)
                    removed += 1
    if removed:
        log.info("removed %d clips whose text changed since the last run", removed)
    return removed


def run(data_dir: Path, groups: list[tuple[str, str, list[Job]]], jobs: int, seed: int) -> dict[str, int]:
    """Synthesize all groups with ``jobs`` worker processes, rewriting a split's manifest after each group.

    Returns:
        Clips listed per split manifest.
    """
    total = sum(len(g) for _, _, g in groups)
    by_split: dict[str, list[Job]] = defaultdict(list)
    for split, _, group in groups:
        by_split[split].extend(group)
    durations: dict[str, float] = {}
    done = failed = new = 0
    t0 = time.perf_counter()
    work = partial(render, data_dir=data_dir, seed=seed)
    counts: dict[str, int] = {}
    with mp.get_context("fork").Pool(processes=jobs) as pool:
        for split, lang, group in groups:
            tg = time.perf_counter()
            group_audio = 0.0
            for utt_id, dur, was_new in pool.imap_unordered(work, group, chunksize=8):
                done += 1
                new += was_new
                if dur is None:
                    failed += 1
                else:
                    durations[utt_id] = dur
                    group_audio += dur
                if done % 2000 == 0:
                    # Rate of clips synthesized in this run: skipped (existing) clips would flatter the ETA.
                    rate = new / (time.perf_counter() - t0)
                    eta = (total - done) / rate / 3600 if rate > 0 else float("nan")
                    log.info(
                        "progress %d/%d clips (%.1f%%; %d new), %.1f new clips/s, ETA %.2f h",
                        done,
                        total,
                        100 * done / total,
                        new,
                        rate,
                        eta,
                    )
            counts[split] = write_manifest(data_dir / f"{split}.tsv", by_split[split], durations, seed)
            log.info(
                "group %s/%s: %d clips, %.0f s of audio in %.0f s; manifest %s.tsv has %d rows",
                split,
                lang,
                len(group),
                group_audio,
                time.perf_counter() - tg,
                split,
                counts[split],
            )
    log.info("finished: %d clips (%d failed) in %.1f h", done, failed, (time.perf_counter() - t0) / 3600)
    return counts


def benchmark(groups: list[tuple[str, str, list[Job]]], n: int, jobs: int, seed: int) -> float:
    """Synthesize ``n`` clips (spread over languages) into a temporary folder; log and return clips/s."""
    pool_jobs = [j for _, _, g in groups for j in g[: max(1, n // max(1, len(groups)))]][:n]
    tmp = Path(tempfile.mkdtemp(prefix="espeak_bench_"))
    try:
        t0 = time.perf_counter()
        with mp.get_context("fork").Pool(processes=jobs) as pool:
            results = list(
                pool.imap_unordered(partial(render, data_dir=tmp, seed=seed), pool_jobs, chunksize=4)
            )
        wall = time.perf_counter() - t0
        audio = sum(d for _, d, _ in results if d)
        size = sum(p.stat().st_size for p in tmp.rglob("*.flac"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rate = len(pool_jobs) / wall
    log.info(
        "benchmark: %d clips with %d workers in %.1f s = %.1f clips/s; %.0f s of audio (%.1fx real time, "
        "%.2f s per clip), %.0f kB FLAC per clip",
        len(pool_jobs),
        jobs,
        wall,
        rate,
        audio,
        audio / wall,
        audio / max(1, len(results)),
        size / 1000 / max(1, len(results)),
    )
    return rate


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("work/demo_data"), help="folder of parallel.tsv")
    parser.add_argument("--langs", default="", help="comma-separated, priority order (default: all columns)")
    parser.add_argument("--splits", default="test,dev,train")
    parser.add_argument("--en-splits", default="test,dev,train", help="splits whose English is spoken too")
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes (keep <= 2 on a shared machine)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-train-per-lang", type=int, default=0, help="cap train clips per language (0: all)"
    )
    parser.add_argument("--benchmark", type=int, default=0, help="only time N clips in a temp folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not Path(ESPEAK).exists():
        parser.error(f"{ESPEAK} not found: apt-get install espeak-ng")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    columns, rows = read_parallel(args.data / "parallel.tsv")
    langs = [lg for lg in args.langs.split(",") if lg] or columns
    unknown = [lg for lg in langs if lg not in columns]
    if unknown:
        parser.error(f"--langs {unknown} are not columns of parallel.tsv (columns: {columns})")
    splits = [s for s in args.splits.split(",") if s]
    groups = plan_jobs(
        rows, langs, splits, [s for s in args.en_splits.split(",") if s], args.max_train_per_lang
    )
    log.info("plan: %s", ", ".join(f"{s}/{lg}={len(g)}" for s, lg, g in groups))
    if args.benchmark:
        benchmark(groups, args.benchmark, args.jobs, args.seed)
        return
    remove_stale_clips(args.data, groups)
    run(args.data, groups, args.jobs, args.seed)


if __name__ == "__main__":
    main()
