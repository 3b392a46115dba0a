"""Ray Data actors: each owns one pipeline stage and processes whole blocks, retrying one that raises."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from miner.distributed.blocks import atomic_write, block_file, input_file, is_done, mark_done, read_done

log = logging.getLogger(__name__)


class BlockWorker:
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


class TextBlockWorker(BlockWorker):
    """``in_XXXXX.json`` texts -> :class:`TextEmbedStage` -> ``block_XXXXX.npy`` (n, dim) float32 + ``.done``."""

    def make_stage(self, **kwargs: Any) -> Any:
        from miner.stages import TextEmbedStage

        return TextEmbedStage(**kwargs)

    def process(self, row: dict[str, Any]) -> int:
        block = int(row["block"])
        if is_done(self.work, block):
            return int(read_done(self.work, block)["rows"])
        texts = json.loads(input_file(self.work, block).read_text(encoding="utf-8"))
        emb = self.stage.embed(texts)
        atomic_write(block_file(self.work, block, ".npy"), lambda f: np.save(f, emb))
        self.fault_point(block)
        mark_done(self.work, block, {"rows": len(texts), **self.stage.info})
        return len(texts)


class SpeechBlockWorker(BlockWorker):
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


class KnnBlockWorker(BlockWorker):
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
        atomic_write(block_file(self.work, block, ".npz"), lambda f: np.savez(f, D=d, I=i))
        self.fault_point(block)
        mark_done(self.work, block, {"rows": hi - lo})
        return hi - lo
