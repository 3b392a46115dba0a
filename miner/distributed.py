"""The Ray engine: the pipeline stages of :mod:`miner.stages` as Ray Data actor pools, resumable by block.

``--engine ray`` runs the heavy, embarrassingly parallel part of a job on a Ray cluster (a local one when no
address is given) and keeps the final, order-dependent step in this process, where the local engine does it:

- ``miner index build`` (text): the driver streams the corpus once into input blocks (``in_XXXXX.json``, the
  texts of ``block_size`` sentences); :class:`TextEmbedStage` actors embed them into ``block_XXXXX.npy`` and
  then write ``block_XXXXX.done``; :func:`miner.database_build.build_text_database` feeds the blocks, in order,
  to the same :class:`index.build.ShardWriter`. The work folder is ``<home>/.ray-work/index-<name>`` (removed
  once the database is complete).
- ``miner mine``: :class:`SpeechEmbedStage` actors fill the per-file segment+embed cache that the local engine
  uses (``OUT/cache/segments``: an entry's JSON is its completion marker); the forward kNN against the database
  runs in :class:`KnnStage` actors over blocks of query rows (``OUT/cache/knn-<digest>/block_XXXXX.npz`` +
  ``.done``); then :func:`miner.mine_job.run_mine` does the margin step over the merged candidates.
- ``miner embed text``: like the index build, then the blocks are concatenated into the output matrix.

A rerun skips every block that has its marker, so a killed job resumes. Inside an actor a block that raises is
retried (``RayOptions.retries`` times); its outputs go through temp names and ``os.replace`` and the marker is
written last, so a retried block overwrites its own files and is never counted twice. Ray restarts actors
whose process dies. Each actor signs in to a roster that the driver holds for the stage; the driver kills
them all when the stage ends, failed or not (after an error Ray Data alone can leave them alive, idle and
holding their CPUs). A pool that cannot start within ``RayOptions.start_timeout`` fails instead of waiting
forever. Outputs equal the local engine's whenever the encoder maps a text or clip to the same vector
whatever batch it sits in (true of the CPU encoders tested; GPU kernels can differ in the last bits between
batch shapes, in either engine).

Multi-node clusters: the work folders, the corpus, the audio and the models must be on storage that every
node sees at the same path (NFS, a shared volume); the driver passes paths, not data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from miner.corpus import read_corpus

__all__ = [
    "ENGINES",
    "BlockMatrix",
    "RayOptions",
    "check_engine",
    "ray_build_text_database",
    "ray_embed_text",
    "ray_run_mine",
    "ray_session",
    "run_blocks",
]

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
TEXT_BLOCK_SIZE = 8192  # sentences per block: 100M sentences -> ~12k files of 25 MB (LaBSE, float32)
SPEECH_BLOCK_SIZE = 16  # audio files per block
KNN_BLOCK_SIZE = 4096  # query rows per block
_FORWARDED_ENV = (
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "MINER_SPEECH_MODEL",
    "MINER_TEXT_MODEL",
)


def check_engine(engine: str) -> str:
    """Return ``engine`` if it is ``local`` or ``ray``, else raise ValueError naming the choices."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    return engine


@dataclass
class RayOptions:
    """How to run on Ray.

    Attributes:
        address: cluster address (``ray://host:10001`` or ``host:6379``); ``None``: ``$RAY_ADDRESS`` or a local
            Ray started for the job and stopped after it.
        workers: actors per stage (each loads the model once); capped by the cluster's GPUs (or CPUs).
        gpus_per_worker: GPUs per actor; ``None``: 1 when the cluster has GPUs, else 0 (one CPU per actor).
        block_size: items per block (``None``: sentences 8192, audio files 16, query rows 4096).
        retries: extra attempts of a block that raises, inside its actor.
        progress: show Ray Data's progress bars.
        fail_once: testing hook: a flag file; the first block to reach its fault point creates it and raises
            once (after writing its outputs, before its marker: the worst moment).
        start_timeout: seconds to wait for all of a stage's actors to start (model load included) before
            the job fails with an error naming the cluster's free resources.
    """

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float | None = None
    block_size: int | None = None
    retries: int = 2
    progress: bool = False
    fail_once: str | None = None
    start_timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: need at least 1 Ray worker")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size={self.block_size}: must be >= 1")
        if self.retries < 0:
            raise ValueError(f"retries={self.retries}: must be >= 0")
        if not self.start_timeout > 0:
            raise ValueError(f"start_timeout={self.start_timeout}: must be > 0 seconds")


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the engine needs Ray Data, not only core Ray)
    except ImportError as exc:
        raise ImportError(
            "--engine ray needs Ray Data: pip install 'samu-miner[ray]' (or pip install 'ray[data]')"
        ) from exc
    return ray


@contextmanager
def ray_session(opts: RayOptions) -> Iterator[Any]:
    """Connect to (or start) Ray for the duration of a job; a Ray started here is shut down afterwards.

    An already initialised Ray (e.g. started by a test or a notebook) is used as it is and left running.
    """
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
        ray.init(
            address=opts.address,
            include_dashboard=False,
            runtime_env={"env_vars": env} if env else None,
        )
        started = True
        log.info("Ray: %s", ray.cluster_resources())
    with warnings.catch_warnings():  # Ray Data's own deprecated fields warn on first access
        warnings.simplefilter("ignore", DeprecationWarning)
        ray.data.DataContext.get_current().enable_progress_bars = opts.progress
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------------------
# Blocks on disk


def _block_file(work: Path, block: int, suffix: str) -> Path:
    return work / f"block_{block:05d}{suffix}"


def _input_file(work: Path, block: int) -> Path:
    return work / f"in_{block:05d}.json"


def is_done(work: Path, block: int) -> bool:
    """Whether ``block`` has its completion marker in ``work``."""
    return _block_file(work, block, ".done").is_file()


def _atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write through a per-process temp name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
        write(f)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda f: json.dump(data, f, ensure_ascii=False), binary=False)


def _mark_done(work: Path, block: int, info: dict[str, Any]) -> None:
    _write_json(_block_file(work, block, ".done"), info)


def _read_done(work: Path, block: int) -> dict[str, Any]:
    return json.loads(_block_file(work, block, ".done").read_text())


class BlockMatrix:
    """The rows of ``block_XXXXX.npy`` files as one (n, dim) float32 array-like (row slices only).

    What :func:`miner.database_build.build_text_database` reads as ``embeddings``: each slice loads (memory
    maps) only the blocks it spans, so the whole matrix never sits in memory.

    Args:
        work: folder holding the blocks.
        counts: rows of each block, in order.
        dim: columns.
    """

    def __init__(self, work: Path, counts: list[int], dim: int) -> None:
        self.work = Path(work)
        self.counts = list(counts)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self.shape = (int(self.offsets[-1]), int(dim))
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"BlockMatrix({self.work}, {len(self.counts)} blocks, shape {self.shape})"

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"BlockMatrix takes contiguous row slices, got {key!r}")
        start, stop, _ = key.indices(len(self))
        parts = [np.zeros((0, self.shape[1]), np.float32)]
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for b in range(max(first, 0), len(self.counts)):
            lo, hi = int(self.offsets[b]), int(self.offsets[b + 1])
            if lo >= stop:
                break
            block = np.load(_block_file(self.work, b, ".npy"), mmap_mode="r")
            if block.shape != (self.counts[b], self.shape[1]):
                raise ValueError(
                    f"{_block_file(self.work, b, '.npy')} has shape {block.shape}, expected "
                    f"({self.counts[b]}, {self.shape[1]}): delete the work folder {self.work} and rerun"
                )
            parts.append(np.asarray(block[max(start, lo) - lo : min(stop, hi) - lo], dtype=np.float32))
        return np.concatenate(parts)


def _fingerprint(inputs: list[Path], **extra: Any) -> dict[str, Any]:
    files = []
    for p in inputs:
        st = Path(p).stat()
        files.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return {"inputs": files, **extra}


def prepare_text_blocks(
    inputs: list[Path], work: Path, block_size: int, read_kwargs: dict[str, Any], **extra: Any
) -> list[int]:
    """Stream the corpora once into input blocks ``in_XXXXX.json`` (the texts of ``block_size`` sentences).

    A work folder made for the same inputs (paths, sizes, mtimes) and settings is reused as it is, with the
    blocks already embedded; one made for anything else is emptied first.

    Returns:
        The number of sentences of each block, in order.
    """
    fp = _fingerprint(inputs, block_size=block_size, read=read_kwargs, **extra)
    plan = work / "inputs.json"
    if plan.is_file():
        have = json.loads(plan.read_text())
        if have.get("fingerprint") == fp:
            return [int(c) for c in have["counts"]]
        log.info("%s was made for other inputs or settings: starting it again", work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    counts: list[int] = []
    stream = (s.text for p in inputs for s in read_corpus(p, **read_kwargs))
    while texts := list(islice(stream, block_size)):
        _write_json(_input_file(work, len(counts)), texts)
        counts.append(len(texts))
    _write_json(plan, {"fingerprint": fp, "counts": counts})  # last: the plan marks the inputs complete
    log.info("%d sentences in %d blocks of <= %d under %s", sum(counts), len(counts), block_size, work)
    return counts


# ----------------------------------------------------------------------------------------------------------
# Actors


class _BlockWorker:
    """A Ray Data actor that owns one stage and processes whole blocks, retrying a block that raises.

    Rows in: ``{"block": int, ...}`` block descriptors. Rows out: ``block``, ``items``, ``attempts``,
    ``seconds``. Subclasses build the stage and write a block's outputs (then its marker).
    """

    def __init__(
        self,
        work: str,
        stage: dict[str, Any],
        retries: int = 2,
        fail_once: str | None = None,
        roster: Any = None,
    ) -> None:
        if roster is not None:  # first: an actor starting after its stage ended fails here, freeing its CPU
            import ray

            ray.get(roster.add.remote(ray.get_runtime_context().current_actor))
        self.work = Path(work)
        self.retries = retries
        self.fail_once = fail_once
        self.stage = self.make_stage(**stage)

    def make_stage(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def process(self, row: dict[str, Any]) -> int:
        """Write the outputs of one block (skipping one already done); returns its number of items."""
        raise NotImplementedError

    def fault_point(self, block: int) -> None:
        """Testing hook: raise once, in the first block that gets here, when ``fail_once`` is set."""
        if not self.fail_once:
            return
        try:
            fd = os.open(self.fail_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(block).encode())
        os.close(fd)
        raise RuntimeError(f"injected failure in block {block} (fail-once flag {self.fail_once})")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {"block": [], "items": [], "attempts": [], "seconds": []}
        n = len(batch["block"])
        for i in range(n):
            row = {key: value[i] for key, value in batch.items()}
            block = int(row["block"])
            t0 = time.perf_counter()
            for attempt in range(1, self.retries + 2):
                try:
                    items = self.process(row)
                    break
                except Exception as exc:
                    if attempt > self.retries:
                        raise RuntimeError(
                            f"block {block} failed {attempt} times; last error: {exc}"
                        ) from exc
                    log.warning("block %d failed (attempt %d): %s; retrying", block, attempt, exc)
            out["block"].append(block)
            out["items"].append(items)
            out["attempts"].append(attempt)
            out["seconds"].append(time.perf_counter() - t0)
        return {key: np.asarray(value) for key, value in out.items()}


class TextBlockWorker(_BlockWorker):
    """``in_XXXXX.json`` texts -> :class:`TextEmbedStage` -> ``block_XXXXX.npy`` (n, dim) float32 + ``.done``."""

    def make_stage(self, **kwargs: Any) -> Any:
        from miner.stages import TextEmbedStage

        return TextEmbedStage(**kwargs)

    def process(self, row: dict[str, Any]) -> int:
        block = int(row["block"])
        if is_done(self.work, block):
            return int(_read_done(self.work, block)["rows"])
        texts = json.loads(_input_file(self.work, block).read_text(encoding="utf-8"))
        emb = self.stage.embed(texts)
        _atomic_write(_block_file(self.work, block, ".npy"), lambda f: np.save(f, emb))
        self.fault_point(block)
        _mark_done(self.work, block, {"rows": len(texts), **self.stage.info})
        return len(texts)


class SpeechBlockWorker(_BlockWorker):
    """Audio files -> :class:`SpeechEmbedStage` -> the per-file cache entries of ``miner mine``.

    Descriptor rows carry ``files``: JSON ``[[path, rel, cache key], ...]``; the worker checks that its model
    gives the driver's cache keys (``model_key``), so every node must load the same model.
    """

    def __init__(self, work: str, stage: dict[str, Any], model_key: str, **kwargs: Any) -> None:
        super().__init__(work, stage, **kwargs)
        self.model_key = model_key

    def make_stage(self, **kwargs: Any) -> Any:
        from miner.stages import SpeechEmbedStage

        return SpeechEmbedStage(**kwargs)

    def process(self, row: dict[str, Any]) -> int:
        from miner.audio import AudioError
        from miner.mine_job import write_cache_entry

        if self.stage.model_key != self.model_key:
            raise ValueError(
                f"this Ray worker loaded speech model {self.stage.model_key!r} but the driver has "
                f"{self.model_key!r}: give every node the same --model path"
            )
        done = 0
        for path, rel, key in json.loads(str(row["files"])):
            if (self.work / f"{key}.json").is_file():
                done += 1
                continue
            try:
                segs, emb = self.stage.embed_file(path, rel)
            except AudioError as exc:  # not cached: the driver's pass reports it in failures.tsv
                log.warning("skipping %s: %s", path, exc)
                continue
            write_cache_entry(self.work, key, segs, emb)
            self.fault_point(int(row["block"]))
            done += 1
        return done


class KnnBlockWorker(_BlockWorker):
    """Rows ``lo:hi`` of ``queries.npy`` -> :class:`KnnStage` -> ``block_XXXXX.npz`` (D, I) + ``.done``."""

    def make_stage(self, **kwargs: Any) -> Any:
        from miner.stages import KnnStage

        return KnnStage(**kwargs)

    def process(self, row: dict[str, Any]) -> int:
        block, lo, hi = int(row["block"]), int(row["lo"]), int(row["hi"])
        if is_done(self.work, block):
            return hi - lo
        queries = np.ascontiguousarray(np.load(self.work / "queries.npy", mmap_mode="r")[lo:hi])
        d, i = self.stage.search(queries)
        _atomic_write(_block_file(self.work, block, ".npz"), lambda f: np.savez(f, D=d, I=i))
        self.fault_point(block)
        _mark_done(self.work, block, {"rows": hi - lo})
        return hi - lo


# ----------------------------------------------------------------------------------------------------------
# Driver


def _pool(ray: Any, opts: RayOptions, n_blocks: int) -> tuple[int, float]:
    """(actors, GPUs per actor) for a stage: one GPU each when the cluster has GPUs, never more than fit."""
    resources = ray.cluster_resources()
    gpus = opts.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    fit = int(resources.get("GPU", 0) // gpus) if gpus > 0 else int(resources.get("CPU", 1))
    workers = max(1, min(opts.workers, fit, n_blocks))
    if workers < min(opts.workers, n_blocks):
        log.warning(
            "asked for %d Ray workers but the cluster fits %d (%s): using %d",
            opts.workers,
            fit,
            resources,
            workers,
        )
    return workers, gpus


class _Roster:
    """A Ray actor (0 CPUs) that keeps the handles of one stage's pool actors, which sign in as they start."""

    def __init__(self) -> None:
        self.actors: list[Any] = []

    def add(self, actor: Any) -> None:
        self.actors.append(actor)

    def all(self) -> list[Any]:
        return self.actors


@contextmanager
def _roster(ray: Any) -> Iterator[Any]:
    """A :class:`_Roster` for one stage; on exit every actor that signed in is killed, then the roster.

    Ray Data (2.60) ends a pool by dropping its references to the actors. After a task error, the failed and
    in-flight tasks' callbacks still hold actor handles, in reference cycles that the error's traceback keeps
    reachable for as long as anything keeps the error (pytest's log capture and IPython's last exception
    do): the actors stay alive, idle, holding their CPUs, and the next pool in the same Ray session (a rerun,
    a test, a notebook) waits forever for them. Killing them by handle does not depend on any of that.
    """
    roster = ray.remote(num_cpus=0)(_Roster).remote()
    try:
        yield roster
    finally:
        try:
            actors = ray.get(roster.all.remote(), timeout=60)
        except Exception as exc:  # a dead roster: its actors' handles went with it
            log.warning("could not list this stage's Ray actors to stop them: %s", exc)
            actors = []
        for actor in actors:
            ray.kill(actor)
        ray.kill(roster)  # an actor still starting fails to sign in and exits


def run_blocks(
    worker: type[_BlockWorker],
    work: Path,
    stage: dict[str, Any],
    rows: list[dict[str, Any]],
    opts: RayOptions,
    what: str,
    **worker_kwargs: Any,
) -> list[dict[str, Any]]:
    """Run block descriptors ``rows`` through an actor pool of ``worker`` (inside :func:`ray_session`).

    Each descriptor is its own Ray block, so idle actors pull the next one (streaming, nothing bulky goes
    through the object store: actors read and write the work folder). The actors are stopped when it
    returns or raises (see :func:`_roster`).

    Returns:
        One dict per block: ``block``, ``items``, ``attempts``, ``seconds``.

    Raises:
        RuntimeError: a block still failed after its retries, or the pool did not start within
            ``opts.start_timeout``; finished blocks are kept for the rerun.
    """
    if not rows:
        return []
    ray = _import_ray()
    workers, gpus = _pool(ray, opts, len(rows))
    t0 = time.perf_counter()
    with _roster(ray) as roster:
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            worker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=gpus,
            fn_constructor_kwargs={
                "work": str(work),
                "stage": stage,
                "retries": opts.retries,
                "fail_once": opts.fail_once,
                "roster": roster,
                **worker_kwargs,
            },
        )
        # This dataset's own context: start() waits for the whole pool, then raises rather than hang.
        ds.context.wait_for_min_actors_s = max(1, math.ceil(opts.start_timeout))
        try:
            results = [
                {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in ds.iter_rows()
            ]
        except ray.exceptions.GetTimeoutError as exc:
            raise RuntimeError(
                f"{what}: {workers} Ray workers ({gpus:g} GPUs and 1 CPU each) did not all start within "
                f"{opts.start_timeout:g} s; free: {ray.available_resources()}, cluster: "
                f"{ray.cluster_resources()}. Free the cluster, lower --workers or raise "
                "RayOptions.start_timeout, then run the same command again"
            ) from exc
        except Exception as exc:
            raise RuntimeError(
                f"{what}: the Ray job failed ({exc}); finished blocks are kept under {work}: run the same "
                "command again to resume"
            ) from exc
    seconds = time.perf_counter() - t0
    items = sum(int(r["items"]) for r in results)
    retried = [int(r["block"]) for r in results if int(r["attempts"]) > 1]
    log.info(
        "%s: %d blocks, %d items in %.1f s (%.1f items/s) with %d Ray workers%s",
        what,
        len(results),
        items,
        seconds,
        items / max(seconds, 1e-9),
        workers,
        f"; blocks retried: {retried}" if retried else "",
    )
    return sorted(results, key=lambda r: int(r["block"]))


def _remove_work(work: Path) -> None:
    """Delete a finished job's work folder, and its parent when that is left empty (``.ray-work``)."""
    shutil.rmtree(work, ignore_errors=True)
    with suppress(OSError):  # other jobs' folders are still there
        work.parent.rmdir()


def _check_all_done(work: Path, n_blocks: int, what: str) -> None:
    missing = [b for b in range(n_blocks) if not is_done(work, b)]
    if missing:
        raise RuntimeError(
            f"{what}: blocks {missing[:5]} have no completion marker under {work}; run the command again"
        )


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
    _check_all_done(work, len(counts), what)
    if counts:
        info = _read_done(work, 0)
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
        _remove_work(work)
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
            _atomic_write(work / "queries.npy", lambda f: np.save(f, q))
        n_blocks = max(1, len(q) // (self.opts.block_size or KNN_BLOCK_SIZE))
        bounds = np.linspace(0, len(q), n_blocks + 1).round().astype(int)  # np.array_split's sizes
        rows = [
            {"block": b, "lo": int(bounds[b]), "hi": int(bounds[b + 1])}
            for b in range(n_blocks)
            if not is_done(work, b)
        ]
        stage = {"db_folder": str(self.db_folder), "k": int(k)}
        run_blocks(KnnBlockWorker, work, stage, rows, self.opts, f"forward kNN ({len(q)} queries)")
        _check_all_done(work, n_blocks, "forward kNN")
        parts = [np.load(_block_file(work, b, ".npz")) for b in range(n_blocks)]
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
