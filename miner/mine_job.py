"""`miner mine`: audio folder -> segments -> SAMU embeddings -> margin mining against a database -> corpus.

Stages (each timed; counts and times go to ``summary.json``):

1. discover: every supported audio file under the folder, recursively, in sorted order;
2. segment + embed: per file, decode, cut (whole file or silero-vad candidate windows) and embed; the result
   is cached per file under ``OUT/cache`` (written atomically), so a killed run restarts without redoing
   finished files; files that fail to decode are listed in ``failures.tsv`` and skipped;
3. target side: a text or speech database (sharded index, searched as it is) or a text file embedded on the fly;
4. mine: :func:`miner.mine.mine_embeddings` with the database's sharded search, backward neighbourhoods
   only for the targets that some segment has among its candidates, and the time-overlap rule;
5. write ``pairs.tsv``, ``pairs.jsonl`` (full provenance), ``summary.json``: temp names, then rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from miner.audio import AudioError, iter_audio_files
from miner.export import Pair, write_pairs_tsv
from miner.mine import mine_embeddings
from miner.spaces import check_same_space
from miner.stages import SpeechEmbedStage
from miner.types import Segment

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class MineOptions:
    """Mining settings (the CLI's flags)."""

    k: int = 4
    margin: str = "ratio"
    mode: str = "max"
    threshold: float = 1.0
    segment: str = "file"
    min_seconds: float = 1.0
    max_seconds: float = 20.0
    max_pause_seconds: float = 2.0
    max_audio_seconds: float | None = None
    batch_size: int = 8
    backward: str = "auto"  # auto | candidates | all
    backward_index: str = "auto"  # auto | flat | ivf (miner.knn.source_index)
    lang: str | None = None


@dataclass
class MineSummary:
    """Counts per stage, timings and the score histogram of a run."""

    files: int = 0
    files_failed: int = 0
    files_cached: int = 0
    segments: int = 0
    targets: int = 0
    pairs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    score_histogram: dict[str, int] = field(default_factory=dict)
    out_dir: str = ""


class _IndexRows:
    """Rows of a sharded index as an array-like (``shape``, ``ndim``, ``y[ids]``) for backward neighbourhoods."""

    def __init__(self, index: Any):
        self._index = index
        self.shape = (int(index.ntotal), int(index.dim))
        self.ndim = 2

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        return self._index.reconstruct_batch(np.asarray(ids))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _file_key(rel: str, path: Path, model_key: str, opts: MineOptions) -> str:
    st = path.stat()
    seg = (opts.segment, opts.min_seconds, opts.max_seconds, opts.max_pause_seconds, opts.lang)
    raw = f"{CACHE_VERSION}|{rel}|{st.st_size}|{st.st_mtime_ns}|{model_key}|{seg}"
    return hashlib.sha1(raw.encode()).hexdigest()


def file_cache_key(rel: str, path: Path, stage: SpeechEmbedStage, opts: MineOptions) -> str:
    """Cache key of one audio file: its id, size, mtime, the model and the segmentation options."""
    return _file_key(rel, path, stage.model_key, opts)


def speech_stage(encoder: Any, opts: MineOptions) -> SpeechEmbedStage:
    """The segment+embed stage of a mining run, around a loaded speech encoder."""
    return SpeechEmbedStage.from_encoder(encoder, **stage_options(opts))


def stage_options(opts: MineOptions) -> dict[str, Any]:
    """:class:`SpeechEmbedStage` keyword arguments taken from the mining options."""
    return {
        "segment": opts.segment,
        "min_seconds": opts.min_seconds,
        "max_seconds": opts.max_seconds,
        "max_pause_seconds": opts.max_pause_seconds,
        "max_audio_seconds": opts.max_audio_seconds,
        "lang": opts.lang,
        "batch_size": opts.batch_size,
    }


def read_cache_entry(cache_dir: Path, key: str) -> tuple[list[Segment], np.ndarray] | None:
    """A finished cache entry (segments, float32 (n, dim) embeddings), or None when there is none yet."""
    meta_file, emb_file = cache_dir / f"{key}.json", cache_dir / f"{key}.npy"
    if not (meta_file.is_file() and emb_file.is_file()):
        return None
    try:
        segs = [Segment.from_dict(d) for d in json.loads(meta_file.read_text())["segments"]]
        emb = np.load(emb_file)
        if emb.ndim != 2 or emb.shape[0] != len(segs):
            raise ValueError(f"{emb.shape[0] if emb.ndim else 0} embeddings for {len(segs)} segments")
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged entry is recomputed, not fatal
        log.warning("cache entry %s is unreadable (%s): computing it again", meta_file, exc)
        return None
    return segs, emb


def write_cache_entry(cache_dir: Path, key: str, segs: list[Segment], emb: np.ndarray) -> None:
    """Write one file's cache entry atomically: embeddings first, then the JSON that marks it complete."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    emb_file = cache_dir / f"{key}.npy"
    tmp = emb_file.with_name(emb_file.stem + f".{os.getpid()}.tmp.npy")  # pid: concurrent Ray workers
    np.save(tmp, np.asarray(emb, dtype=np.float32))
    os.replace(tmp, emb_file)
    _atomic_write_text(cache_dir / f"{key}.json", json.dumps({"segments": [s.to_dict() for s in segs]}))


def embed_audio_dir(
    audio_dir: Path,
    cache_dir: Path,
    encoder: Any,
    opts: MineOptions,
    summary: MineSummary,
    failures: list[tuple[str, str]],
    progress: bool = True,
) -> tuple[list[Segment], np.ndarray]:
    """Segment and embed every file under ``audio_dir``, reusing per-file cache entries.

    Returns:
        The segments (in file order, then time) and their float32 (n, dim) embeddings.
    """
    files = list(iter_audio_files(audio_dir))
    if not files:
        raise FileNotFoundError(
            f"no audio files ({', '.join(sorted({'.wav', '.flac', '.ogg', '.mp3'}))}, ...) under {audio_dir}"
        )
    summary.files = len(files)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stage = speech_stage(encoder, opts)
    segments: list[Segment] = []
    chunks: list[np.ndarray] = []
    for path in tqdm(files, desc="segment+embed", unit="file", disable=not progress):
        rel = path.relative_to(audio_dir).as_posix()
        key = file_cache_key(rel, path, stage, opts)
        cached = read_cache_entry(cache_dir, key)
        if cached is not None:
            segs, emb = cached
            summary.files_cached += 1
        else:
            try:
                segs, emb = stage.embed_file(path, rel)
            except AudioError as exc:
                failures.append((str(path), str(exc)))
                log.warning("skipping %s: %s", path, exc)
                continue
            write_cache_entry(cache_dir, key, segs, emb)
        segments.extend(segs)
        chunks.append(emb)
    x = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), np.float32)
    summary.files_failed = len(failures)
    summary.segments = len(segments)
    return segments, x


def _histogram(scores: np.ndarray) -> dict[str, int]:
    if scores.size == 0:
        return {}
    counts, edges = np.histogram(scores, bins=10)
    return {f"{edges[i]:.3f}-{edges[i + 1]:.3f}": int(c) for i, c in enumerate(counts)}


def run_mine(
    audio_dir: Path,
    out_dir: Path,
    *,
    speech_encoder: Any,
    target: str,
    target_kind: str,
    open_target: Callable[[], dict[str, Any]],
    opts: MineOptions,
    provenance: dict[str, Any] | None = None,
    progress: bool = True,
    crash_after_files: int | None = None,
) -> MineSummary:
    """Run the whole mining job; see the module docstring.

    Args:
        audio_dir: folder of audio (searched recursively).
        out_dir: output folder (created); holds the cache, so rerunning resumes.
        speech_encoder: a speech encoder of any kind (SAMU, ASR cascade, fused: ``encode``, ``space_id``,
            ``dim``, ``model_id``, ``fingerprint``).
        target: name of the target side, for messages and provenance.
        target_kind: ``text`` or ``speech``.
        open_target: returns ``{"vectors": array-like (m, d), "search_fn": callable or None, "rows": fn(ids) ->
            list[dict], "space_id": str, "version": str}``; called after the speech side is embedded.
        opts: mining settings.
        provenance: extra fields recorded in ``pairs.jsonl`` (model ids, database version...).
        crash_after_files: testing hook: raise after embedding this many files (resume tests).

    Returns:
        The run's :class:`MineSummary` (also written to ``summary.json``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = MineSummary(out_dir=str(out_dir))
    failures: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    cache = out_dir / "cache" / "segments"
    if crash_after_files is not None:
        _crash_hook(speech_encoder, crash_after_files)
    segments, x = embed_audio_dir(audio_dir, cache, speech_encoder, opts, summary, failures, progress)
    t1 = time.perf_counter()
    tgt = open_target()
    check_same_space(
        speech_encoder.space_id,
        tgt["space_id"],
        "the speech model",
        f"{target_kind} side {target!r}",
        speech_encoder.dim,
        int(tgt["vectors"].shape[1]),
    )
    summary.targets = int(tgt["vectors"].shape[0])
    t2 = time.perf_counter()
    groups = spans = None
    if opts.mode == "max" and segments:
        rec_ids = {r: i for i, r in enumerate(dict.fromkeys(s.recording_id for s in segments))}
        groups = np.array([rec_ids[s.recording_id] for s in segments], dtype=np.int64)
        spans = np.array([(s.start, s.end) for s in segments], dtype=np.float64)
    backward = None if opts.backward == "auto" else opts.backward
    if backward is None and tgt["search_fn"] is not None and opts.mode in ("max", "fwd", "intersect"):
        backward = "candidates"  # a database: backward kNN only for the targets some segment reaches
    pairs = (
        mine_embeddings(
            x,
            tgt["vectors"],
            k=opts.k,
            margin=opts.margin,
            mode=opts.mode,
            threshold=opts.threshold,
            search_fn=tgt["search_fn"],
            backward_targets=backward,  # type: ignore[arg-type]
            source_groups=groups,
            source_spans=spans,
            backward_index=opts.backward_index,
        )
        if len(segments)
        else []
    )
    t3 = time.perf_counter()
    target_ids = np.array([t for _, _, t in pairs], dtype=np.int64)
    rows = tgt["rows"](target_ids.tolist()) if pairs else []
    x_norm = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y_pairs = np.asarray(tgt["vectors"][target_ids], dtype=np.float32) if pairs else np.zeros((0, x.shape[1]))
    y_pairs = y_pairs / np.maximum(np.linalg.norm(y_pairs, axis=1, keepdims=True), 1e-12)
    direction = f"speech->{target_kind}"
    out_pairs: list[Pair] = []
    records = []
    for j, ((score, s, t), row) in enumerate(zip(pairs, rows, strict=True)):
        seg = segments[s]
        cosine = float(x_norm[s] @ y_pairs[j])
        text = (
            row.get("text") or f"{row.get('path')}@{row.get('start', 0.0):.2f}+{row.get('duration', 0.0):.2f}"
        )
        text_id = str(row.get("ext_id") if row.get("ext_id") is not None else t)
        out_pairs.append(Pair(float(score), seg.path, seg.start, seg.duration, text, text_id, direction))
        records.append(
            {
                "score": float(score),
                "cosine": cosine,
                "segment": seg.to_dict(),
                "target_row": int(t),
                "target": row,
                "direction": direction,
            }
        )
    summary.pairs = len(out_pairs)
    summary.score_histogram = _histogram(np.array([p.score for p in out_pairs]))
    write_pairs_tsv(out_dir / "pairs.tsv", out_pairs)
    meta = {
        "provenance": {
            **(provenance or {}),
            "speech_model": speech_encoder.model_id,
            "space_id": speech_encoder.space_id,
            "target": target,
            "target_kind": target_kind,
            "target_version": tgt.get("version"),
            **{f"option_{k}": v for k, v in asdict(opts).items()},
        }
    }
    lines = [json.dumps(meta, ensure_ascii=False)] + [json.dumps(r, ensure_ascii=False) for r in records]
    _atomic_write_text(out_dir / "pairs.jsonl", "\n".join(lines) + "\n")
    _atomic_write_text(
        out_dir / "failures.tsv",
        "path\terror\n" + "".join(f"{p}\t{' '.join(e.split())}\n" for p, e in failures),
    )
    summary.seconds = {
        "segment_embed": round(t1 - t0, 3),
        "open_target": round(t2 - t1, 3),
        "mine": round(t3 - t2, 3),
        "total": round(time.perf_counter() - t0, 3),
    }
    _atomic_write_text(out_dir / "summary.json", json.dumps(asdict(summary), indent=2))
    log.info(
        "mined %d pairs from %d segments of %d files (%d failed) against %d targets in %.1fs",
        summary.pairs,
        summary.segments,
        summary.files,
        summary.files_failed,
        summary.targets,
        summary.seconds["total"],
    )
    return summary


def _crash_hook(encoder: Any, after: int) -> None:
    """Make ``encoder.encode`` raise after ``after`` calls (simulates a crash mid-run in tests)."""
    original = encoder.encode
    calls = {"n": 0}

    def encode(*args: Any, **kwargs: Any) -> np.ndarray:
        if calls["n"] >= after:
            raise RuntimeError("injected crash")
        calls["n"] += 1
        return original(*args, **kwargs)

    encoder.encode = encode


def database_target(folder: Path) -> dict[str, Any]:
    """Target side from a database folder: sharded search, reconstructed rows, the store's rows."""
    from miner.databases import open_database

    db = open_database(folder)
    return {
        "vectors": _IndexRows(db.index),
        "search_fn": db.index.search,
        "rows": lambda ids: db.store.get_many(ids),
        "space_id": db.manifest.space_id,
        "version": f"{db.manifest.name}@{db.manifest.created}/{db.manifest.ntotal}",
        "kind": db.manifest.kind,
    }


def text_file_target(path: Path, text_encoder: Any, cache_dir: Path) -> dict[str, Any]:
    """Target side from a plain corpus file, embedded once with ``text_encoder`` (cached by content + space)."""
    from miner.corpus import read_corpus

    sentences = list(read_corpus(path))
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
    cache = cache_dir / f"text-{digest}-{text_encoder.space_id}.npy"
    if cache.is_file():
        y = np.load(cache)
    else:
        y = text_encoder.encode([s.text for s in sentences], progress=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npy")
        np.save(tmp, y)
        os.replace(tmp, cache)
    rows = [{"text": s.text, "ext_id": s.id, "lang": s.lang} for s in sentences]
    return {
        "vectors": y,
        "search_fn": None,
        "rows": lambda ids: [rows[i] for i in ids],
        "space_id": text_encoder.space_id,
        "version": f"{path.name}@sha1:{digest}",
        "kind": "text",
    }
