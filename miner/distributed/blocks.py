"""Blocks on disk: the per-block files of a resumable Ray stage and the matrix they add up to."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from miner.corpus import read_corpus

log = logging.getLogger(__name__)


TEXT_BLOCK_SIZE = 8192  # sentences per block: 100M sentences -> ~12k files of 25 MB (LaBSE, float32)
SPEECH_BLOCK_SIZE = 16  # audio files per block
KNN_BLOCK_SIZE = 4096  # query rows per block


def block_file(work: Path, block: int, suffix: str) -> Path:
    return work / f"block_{block:05d}{suffix}"


def input_file(work: Path, block: int) -> Path:
    return work / f"in_{block:05d}.json"


def is_done(work: Path, block: int) -> bool:
    """Whether ``block`` has its completion marker in ``work``."""
    return block_file(work, block, ".done").is_file()


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write through a per-process temp name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
        write(f)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: json.dump(data, f, ensure_ascii=False), binary=False)


def mark_done(work: Path, block: int, info: dict[str, Any]) -> None:
    _write_json(block_file(work, block, ".done"), info)


def read_done(work: Path, block: int) -> dict[str, Any]:
    return json.loads(block_file(work, block, ".done").read_text())


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
            block = np.load(block_file(self.work, b, ".npy"), mmap_mode="r")
            if block.shape != (self.counts[b], self.shape[1]):
                raise ValueError(
                    f"{block_file(self.work, b, '.npy')} has shape {block.shape}, expected "
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
        _write_json(input_file(work, len(counts)), texts)
        counts.append(len(texts))
    _write_json(plan, {"fingerprint": fp, "counts": counts})  # last: the plan marks the inputs complete
    log.info("%d sentences in %d blocks of <= %d under %s", sum(counts), len(counts), block_size, work)
    return counts
