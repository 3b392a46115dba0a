"""The jobs ``--engine ray`` runs: text database builds, text embedding and mining."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from miner.corpus import read_corpus
from miner.distributed.blocks import (
    KNN_BLOCK_SIZE,
    SPEECH_BLOCK_SIZE,
    TEXT_BLOCK_SIZE,
    BlockMatrix,
    atomic_write,
    block_file,
    is_done,
    prepare_text_blocks,
    read_done,
)
from miner.distributed.pool import check_all_done, remove_work, run_blocks
from miner.distributed.session import RayOptions, ray_session
from miner.distributed.workers import KnnBlockWorker, SpeechBlockWorker, TextBlockWorker

log = logging.getLogger(__name__)


def _embed_text_blocks(
    inputs: list[Path],
    work: Path,
    encoder_name: str,
    opts: RayOptions,
    read_kwargs: dict[str, Any],
    what: str,
    batch_size: int = 64,
) -> tuple[list[int], dict[str, Any]]:
    """Input blocks -> embedded blocks (pending ones only). Returns the block sizes and the encoder info."""
    block_size = opts.block_size or TEXT_BLOCK_SIZE
    counts = prepare_text_blocks(
        inputs, work, block_size, read_kwargs, encoder=encoder_name, batch_size=batch_size
    )
    pending = [{"block": b} for b in range(len(counts)) if not is_done(work, b)]
    if len(pending) < len(counts):
        log.info("%s: %d of %d blocks already embedded", what, len(counts) - len(pending), len(counts))
    stage = {"encoder_name": encoder_name, "batch_size": batch_size}
    with ray_session(opts):
        run_blocks(TextBlockWorker, work, stage, pending, opts, what)
    check_all_done(work, len(counts), what)
    if counts:
        info = read_done(work, 0)
    else:  # an empty corpus: no actor ran, ask the encoder itself
        from miner.stages import TextEmbedStage

        info = TextEmbedStage(encoder_name, device="cpu").info
    return counts, info


def ray_build_text_database(
    name: str,
    inputs: list[Path],
    *,
    encoder_name: str,
    ray: RayOptions,
    lang: str | None = None,
    factory: str = "auto",
    shard_size: int = 500_000,
    skip_bad_lines: bool = False,
    root: str | os.PathLike[str] | None = None,
    progress: bool = True,
    keep_blocks: bool = False,
) -> Any:
    """``miner index build --engine ray``: embed on Ray, then the local writer (same database as local).

    Args:
        name: database name.
        inputs: corpus files, read in order.
        encoder_name: text encoder name or folder, loaded by every actor.
        ray: Ray options.
        lang, factory, shard_size, skip_bad_lines, root, progress: as
            :func:`miner.database_build.build_text_database`.
        keep_blocks: keep the work folder after the database is complete.

    Returns:
        The :class:`miner.database_build.BuildReport`.
    """
    from miner.database_build import build_text_database, check_build_inputs
    from miner.home import data_root

    t0 = time.perf_counter()
    check_build_inputs(name, inputs, root)  # before Ray starts
    work = data_root(root) / ".ray-work" / f"index-{name}"
    read_kwargs = {"lang": lang, "skip_bad_lines": skip_bad_lines}
    counts, info = _embed_text_blocks(list(inputs), work, encoder_name, ray, read_kwargs, f"index {name}")
    report = build_text_database(
        name,
        list(inputs),
        embeddings=BlockMatrix(work, counts, int(info["dim"])),
        space_id=str(info["space_id"]),
        encoder_id=str(info["model_id"]),
        lang=lang,
        factory=factory,
        shard_size=shard_size,
        skip_bad_lines=skip_bad_lines,
        root=root,
        progress=progress,
    )
    if not keep_blocks:
        remove_work(work)
    report.seconds = time.perf_counter() - t0  # the whole job, Ray pass included
    return report


def ray_embed_text(
    input: Path, out: Path, *, encoder_name: str, ray: RayOptions, batch_size: int = 64
) -> tuple[np.ndarray, dict[str, Any]]:
    """``miner embed text --engine ray``: (n, dim) float32 embeddings in corpus order and the sidecar fields.

    The work folder ``<out folder>/.<out name>.blocks`` is removed once the matrix is assembled.
    """
    work = out.parent / f".{out.name}.blocks"
    counts, info = _embed_text_blocks([input], work, encoder_name, ray, {}, f"embed {input.name}", batch_size)
    emb = BlockMatrix(work, counts, int(info["dim"]))[:]
    ids = [s.id for s in read_corpus(input)]
    shutil.rmtree(work, ignore_errors=True)
    meta = {
        "space_id": info["space_id"],
        "model_id": info["model_id"],
        "dim": int(info["dim"]),
        "count": len(ids),
        "ids": ids,
    }
    return emb, meta


class RayForwardSearch:
    """A ``search_fn`` for :func:`miner.mine.mine_embeddings`: the forward kNN in :class:`KnnStage` actors.

    Query rows are cut into blocks of at least ``block_size`` rows (a small tail joins the last block, so
    faiss takes the same code path per block as for the whole matrix); blocks are cached under
    ``work/knn-<digest of queries, k, database>``.
    """

    def __init__(self, db_folder: Path, work: Path, opts: RayOptions, version: str) -> None:
        self.db_folder, self.work, self.opts, self.version = Path(db_folder), Path(work), opts, version

    def __call__(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        digest = hashlib.sha1(q.tobytes() + f"|{q.shape}|{k}|{self.version}".encode()).hexdigest()[:16]
        work = self.work / f"knn-{digest}"
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "queries.npy").is_file():
            atomic_write(work / "queries.npy", lambda f: np.save(f, q))
        n_blocks = max(1, len(q) // (self.opts.block_size or KNN_BLOCK_SIZE))
        bounds = np.linspace(0, len(q), n_blocks + 1).round().astype(int)  # np.array_split's sizes
        rows = [
            {"block": b, "lo": int(bounds[b]), "hi": int(bounds[b + 1])}
            for b in range(n_blocks)
            if not is_done(work, b)
        ]
        stage = {"db_folder": str(self.db_folder), "k": int(k)}
        run_blocks(KnnBlockWorker, work, stage, rows, self.opts, f"forward kNN ({len(q)} queries)")
        check_all_done(work, n_blocks, "forward kNN")
        parts = [np.load(block_file(work, b, ".npz")) for b in range(n_blocks)]
        return np.concatenate([p["D"] for p in parts]), np.concatenate([p["I"] for p in parts])


def ray_run_mine(
    audio_dir: Path,
    out_dir: Path,
    *,
    speech_encoder: Any,
    model_path: str | None,
    target: str,
    target_kind: str,
    open_target: Callable[[], dict[str, Any]],
    opts: Any,
    ray: RayOptions,
    db_folder: Path | None = None,
    provenance: dict[str, Any] | None = None,
    progress: bool = True,
) -> Any:
    """``miner mine --engine ray``: segment+embed and forward kNN on Ray, the margin step here.

    Args:
        audio_dir, out_dir, speech_encoder, target, target_kind, open_target, opts, provenance, progress:
            as :func:`miner.mine_job.run_mine` (``speech_encoder`` is the driver's copy: cache keys, space
            checks, and files the actors could not decode).
        model_path: the speech model every actor loads (the same one as ``speech_encoder``).
        ray: Ray options.
        db_folder: the target database folder: its forward kNN runs in :class:`KnnStage` actors (``None``:
            a text-file target, searched here).

    Returns:
        The run's :class:`miner.mine_job.MineSummary`; ``pairs.tsv`` equals the local engine's.
    """
    from miner.audio import iter_audio_files
    from miner.mine_job import file_cache_key, run_mine, speech_stage, stage_options

    cache = out_dir / "cache" / "segments"
    cache.mkdir(parents=True, exist_ok=True)
    stage = speech_stage(speech_encoder, opts)  # the driver's keys; no second model
    todo = []
    for path in iter_audio_files(audio_dir):
        rel = path.relative_to(audio_dir).as_posix()
        key = file_cache_key(rel, path, stage, opts)
        if not (cache / f"{key}.json").is_file():
            todo.append([str(path), rel, key])
    size = ray.block_size or SPEECH_BLOCK_SIZE
    rows = [
        {"block": b, "files": json.dumps(todo[lo : lo + size])}
        for b, lo in enumerate(range(0, len(todo), size))
    ]
    model = model_path or os.environ.get("MINER_SPEECH_MODEL")
    with ray_session(ray):
        run_blocks(
            SpeechBlockWorker,
            cache,
            {"model_path": model, **stage_options(opts)},
            rows,
            ray,
            f"segment+embed ({len(todo)} files)",
            model_key=stage.model_key,
        )

        def target_on_ray() -> dict[str, Any]:
            tgt = open_target()
            if db_folder is not None and tgt.get("search_fn") is not None:
                tgt = {
                    **tgt,
                    "search_fn": RayForwardSearch(db_folder, out_dir / "cache", ray, tgt["version"]),
                }
            return tgt

        return run_mine(
            audio_dir,
            out_dir,
            speech_encoder=speech_encoder,
            target=target,
            target_kind=target_kind,
            open_target=target_on_ray,
            opts=opts,
            provenance=provenance,
            progress=progress,
        )
