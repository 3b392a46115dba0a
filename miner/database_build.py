"""Build text and speech databases under the data root: corpus -> encoder -> sharded faiss + store.

Resumable: :class:`index.ShardWriter` commits shard by shard; a restarted build skips the inputs already
committed (``completed_count``) and ends with the same bytes as an uninterrupted run. Memory stays bounded by
one shard plus one encoding batch, whatever the corpus size.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from index.build import ShardWriter
from index.factory import choose_factory, estimate_bytes
from index.manifest import Manifest
from miner.corpus import CorpusStats, read_corpus
from miner.home import check_name, data_root

log = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseComplete(FileExistsError):
    """A build was asked for a database that is already complete (nothing to resume; ``index add`` appends).

    Attributes:
        manifest: the complete database's manifest.
    """

    def __init__(self, message: str, manifest: Manifest):
        super().__init__(message)
        self.manifest = manifest


@dataclass
class BuildReport:
    """What a build did, for the CLI and the logs."""

    name: str
    folder: Path
    manifest: Manifest
    inputs: int = 0
    added: int = 0
    duplicates: int = 0
    blank: int = 0
    bad: int = 0
    skipped_resume: int = 0
    failed_files: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def available_memory_bytes() -> int:
    """Physical memory currently available (Linux ``MemAvailable``; falls back to total physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def count_corpus(path: Path, **kwargs: Any) -> int:
    """Sentences in a corpus (one streaming pass; used to size the index before building)."""
    return sum(1 for _ in read_corpus(path, **kwargs))


def database_folder(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """``<data root>/<name>`` for a plain name (nothing can escape the data root)."""
    return data_root(root) / check_name(name)


def resolve_factory(factory: str, n: int, dim: int) -> str:
    """``auto`` -> a factory for ``n`` vectors of ``dim`` within half the available memory (logged)."""
    if factory != "auto":
        return factory
    budget = available_memory_bytes() // 2
    choice = choose_factory(max(n, 1), dim, budget)
    log.info(
        "index for %d x %d vectors: %s, about %.2f GB (budget %.2f GB): %s",
        n,
        dim,
        choice.factory,
        estimate_bytes(choice.factory, max(n, 1), dim) / 1e9,
        budget / 1e9,
        choice.reason,
    )
    return choice.factory


def check_build_inputs(
    name: str, inputs: list[Path], root: str | os.PathLike[str] | None = None, *, append: bool = False
) -> Path:
    """Refuse a build before any work: no corpus, a missing corpus file, or (unless ``append``) a complete
    database of that name. Returns the database folder."""
    folder = database_folder(name, root)
    if not inputs:
        raise ValueError("no input corpus given: pass --input FILE")
    for p in inputs:
        if not Path(p).is_file():
            raise FileNotFoundError(f"corpus file {p} not found")
    if not append and (folder / "manifest.json").exists():
        _refuse_complete(name, folder)
    return folder


def _refuse_complete(name: str, folder: Path) -> None:
    manifest = Manifest.load(folder)
    if manifest.complete:
        raise DatabaseComplete(
            f"database {name!r} at {folder} is complete ({manifest.ntotal} {manifest.kind} items from "
            f"{manifest.inputs} inputs): nothing to resume; `miner index add --name {name} --input FILE` appends "
            "more, or choose another name",
            manifest,
        )


def build_text_database(
    name: str,
    inputs: list[Path],
    *,
    encoder: Any | None = None,
    embeddings: Path | Any | None = None,
    space_id: str | None = None,
    encoder_id: str | None = None,
    lang: str | None = None,
    factory: str = "auto",
    shard_size: int = 500_000,
    batch_size: int = 1024,
    skip_bad_lines: bool = False,
    root: str | os.PathLike[str] | None = None,
    append: bool = False,
    progress: bool = True,
    checkpoint_rows: int = 50_000,
) -> BuildReport:
    """Embed text corpora (or take precomputed embeddings) into ``<root>/<name>``.

    Args:
        name: database name (a plain name).
        inputs: corpus files (txt / tsv / jsonl / parquet), read in order.
        encoder: a text encoder (``encode``, ``dim``, ``space_id``, ``model_id``); not needed with ``embeddings``.
        embeddings: a float32 ``.npy`` (n, dim) matrix aligned with the sentences of ``inputs`` (blank lines
            excluded), for users who embed elsewhere; needs ``space_id``. An array-like (``shape``, ``ndim``,
            row slices) works too: the Ray engine passes its per-block embeddings this way.
        space_id: the space of ``embeddings``.
        encoder_id: the encoder recorded for ``embeddings`` (default ``precomputed:<file name>``).
        lang: language of every sentence (else a ``lang`` column where the format has one).
        factory: faiss factory string or ``auto`` (size and memory decide).
        shard_size: vectors per shard.
        batch_size: sentences per encoder call.
        skip_bad_lines: skip undecodable lines (counted) instead of stopping at the first one.
        append: add the inputs as new shards to an existing database (``miner index add``).
        checkpoint_rows: save the open shard's inputs every this many sentences (a killed build resumes from
            there; :class:`index.ShardWriter`).

    Returns:
        A :class:`BuildReport`. Exact duplicate sentences are stored once (LASER-style) and counted.
    """
    folder = check_build_inputs(name, inputs, root, append=append)
    matrix: Any = None  # an (n, dim) array-like: np.ndarray, memory map or BlockMatrix
    if embeddings is not None:
        if not space_id:
            raise ValueError(
                "--embeddings needs --space-id (the embedding space the vectors are in, e.g. labse-768)"
            )
        is_file = isinstance(embeddings, str | os.PathLike)
        matrix = np.load(embeddings, mmap_mode="r") if is_file else embeddings
        if matrix.ndim != 2:
            raise ValueError(f"{embeddings}: expected a 2-D (n, dim) matrix, got shape {matrix.shape}")
        default_id = f"precomputed:{Path(embeddings).name}" if is_file else "precomputed"
        dim, space, encoder_id = int(matrix.shape[1]), space_id, encoder_id or default_id
    elif encoder is None:
        raise ValueError("pass a text encoder or --embeddings")
    else:
        dim, space, encoder_id = int(encoder.dim), str(encoder.space_id), str(encoder.model_id)

    read_kwargs: dict[str, Any] = {"lang": lang, "skip_bad_lines": skip_bad_lines}
    writer_kwargs: dict[str, Any] = {
        "space_id": space,
        "encoder_id": encoder_id,
        "kind": "text",
        "name": name,
        "shard_size": shard_size,
        "dedup": True,
        "checkpoint_rows": checkpoint_rows,
    }
    t0 = time.perf_counter()
    total = sum(count_corpus(p, **read_kwargs) for p in inputs)
    if matrix is not None and len(matrix) != total:
        raise ValueError(
            f"{embeddings} has {len(matrix)} rows but the inputs hold {total} sentences "
            "(blank lines excluded); they must align one to one"
        )
    exists = (folder / "manifest.json").exists()
    if append and not exists:
        raise FileNotFoundError(
            f"database {name!r} not found under {folder.parent}: build it first (miner index build)"
        )
    base_dups = 0
    if exists:
        have = Manifest.load(folder)
        if append and have.complete:
            base_dups = have.inputs - have.ntotal
        writer_kwargs.update(
            factory=have.factory,
            created=have.created,
            shard_size=int(have.build.get("shard_size", shard_size)),
        )
    else:
        writer_kwargs["factory"] = resolve_factory(factory, total, dim)
    stats = CorpusStats()
    report = BuildReport(name=name, folder=folder, manifest=None)  # type: ignore[arg-type]
    with ShardWriter(folder, dim, append=append, **writer_kwargs) as writer:
        done = writer.completed_count()
        report.skipped_resume = done
        if done:
            log.info("resuming %s: %d of %d sentences already committed", name, done, total)
        stream = (s for p in inputs for s in read_corpus(p, stats=stats, **read_kwargs))
        bar = tqdm(total=total, initial=done, desc=f"index {name}", unit="sent", disable=not progress)
        position = done
        for batch in _batched(islice(stream, done, None), batch_size):
            texts = [s.text for s in batch]
            rows = [s.to_dict() for s in batch]
            if matrix is not None:
                vectors = np.asarray(matrix[position : position + len(batch)], dtype=np.float32)
            else:
                assert encoder is not None  # checked above: either embeddings or an encoder
                new = ~writer.duplicate_mask(texts)
                vectors = encoder.encode(
                    [t for t, keep in zip(texts, new, strict=True) if keep], batch_size=64
                )
            report.added += writer.add(vectors, rows)
            position += len(batch)
            bar.update(len(batch))
        bar.close()
    report.manifest = writer.manifest
    report.inputs = total
    report.duplicates = report.manifest.inputs - report.manifest.ntotal - base_dups
    report.blank, report.bad = stats.blank, stats.bad
    report.seconds = time.perf_counter() - t0
    return report


def build_speech_database(
    name: str,
    audio_dir: Path,
    *,
    encoder: Any,
    segment: str = "file",
    min_seconds: float = 1.0,
    max_seconds: float = 20.0,
    max_pause_seconds: float = 2.0,
    lang: str | None = None,
    factory: str = "auto",
    shard_size: int = 500_000,
    batch_size: int = 8,
    max_audio_seconds: float | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: bool = True,
    checkpoint_rows: int = 50_000,
) -> BuildReport:
    """Embed the utterances under ``audio_dir`` with a SAMU model into a speech database ``<root>/<name>``.

    Each id stores path, start, duration and language. Files that fail to decode are reported and skipped.
    ``segment="vad"`` cuts long recordings into silero-vad candidate windows first.
    """
    from miner.audio import AudioError, iter_audio_files, load_audio
    from miner.segment import cut, segment_recording

    if segment not in ("file", "vad"):
        raise ValueError(f"segment={segment!r}: use 'file' or 'vad'")

    folder = database_folder(name, root)
    audio_dir = Path(audio_dir)
    files = list(iter_audio_files(audio_dir))
    if not files:
        raise FileNotFoundError(f"no audio files under {audio_dir}")
    exists = (folder / "manifest.json").exists()
    if exists:
        _refuse_complete(name, folder)
    chosen = Manifest.load(folder).factory if exists else resolve_factory(factory, len(files), encoder.dim)
    report = BuildReport(name=name, folder=folder, manifest=None)  # type: ignore[arg-type]
    t0 = time.perf_counter()

    def segments() -> Iterator[tuple[Any, np.ndarray]]:
        for path in files:
            rel = path.relative_to(audio_dir).as_posix()
            try:
                wav = load_audio(path, max_seconds=max_audio_seconds)
            except AudioError as exc:
                report.failed_files.append((str(path), str(exc)))
                log.warning("skipping %s: %s", path, exc)
                continue
            for seg in segment_recording(
                rel,
                str(path),
                wav,
                mode=segment,  # type: ignore[arg-type]
                min_seconds=min_seconds,
                max_seconds=max_seconds,
                max_pause_seconds=max_pause_seconds,
                lang=lang,
            ):
                yield seg, cut(wav, seg.start, seg.duration)

    with ShardWriter(
        folder,
        encoder.dim,
        chosen,
        space_id=encoder.space_id,
        encoder_id=encoder.model_id,
        kind="speech",
        name=name,
        shard_size=shard_size,
        checkpoint_rows=checkpoint_rows,
    ) as writer:
        done = writer.completed_count()
        report.skipped_resume = done
        bar = tqdm(desc=f"index {name}", unit="seg", initial=done, disable=not progress)
        for batch in _batched(islice(segments(), done, None), 64):
            vectors = encoder.encode([w for _, w in batch], batch_size=batch_size)
            rows = [
                {"id": s.id, "path": s.path, "start": s.start, "duration": s.duration, "lang": s.lang}
                for s, _ in batch
            ]
            report.added += writer.add(vectors, rows)
            bar.update(len(batch))
        bar.close()
    report.manifest = writer.manifest
    report.inputs = report.manifest.inputs
    report.seconds = time.perf_counter() - t0
    return report


def list_databases(root: str | os.PathLike[str] | None = None) -> list[Manifest]:
    """Manifests of the databases under the data root (folders holding a manifest.json), by name."""
    base = data_root(root)
    if not base.is_dir():
        return []
    out = []
    for p in sorted(base.iterdir()):
        if (p / "manifest.json").is_file():
            try:
                out.append(Manifest.load(p))
            except ValueError as exc:
                log.warning("skipping %s: %s", p, exc)
    return out
