"""The trainer's batches: model inputs plus per-row arrays, from cached frames or from audio, and the share of
each epoch's plan that one process of a (possibly distributed) run takes.

Exact resume rests on two rules kept here: creating a loader draws nothing from the global RNG (its workers
get their own seeded generator), and the sampler moves past a batch before that batch is handed out, so a
checkpoint taken after an update resumes with the next one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from miner.train.data import Utterance, UtteranceBatches
from miner.train.sampling import LanguageSampler

if TYPE_CHECKING:
    from miner.encoders.samu import SpeechEncoder
    from miner.train.features import FrameCache


def batch_stream(
    utts: Sequence[Utterance],
    rows: dict[str, np.ndarray],
    batches: Sequence[np.ndarray],
    *,
    frames: FrameCache | None,
    prepare: Callable[[Sequence[np.ndarray]], dict[str, torch.Tensor]],
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """One dict per batch of row indices: model inputs, ``rows`` sliced to it, ``n`` and ``seconds``.

    Args:
        utts: the utterances the indices refer to.
        rows: per-row arrays (targets (n, dim), text_ids (n,), ...), sliced to each batch as tensors.
        batches: int arrays of row indices.
        frames: their cached backbone frames (then ``frames`` / ``mask`` tensors), or None to read the audio
            and run ``prepare`` (the backbone's input preparation) in ``num_workers`` loader processes.
    """
    if frames is not None:
        durations = np.array([u.duration for u in utts])
        for idx in batches:
            yield {
                **frames.batch(idx.tolist()),
                **{k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in rows.items()},
                "n": len(idx),
                "seconds": float(durations[idx].sum()),
            }
        return
    data = UtteranceBatches(list(utts), rows, list(batches), prepare)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),  # its own: the global RNG stays untouched
    )
    yield from loader


def process_batches(
    sampler: LanguageSampler,
    world: int,
    rank: int,
    load: Callable[[list[np.ndarray]], Iterator[dict[str, Any]]],
) -> Generator[dict[str, Any], None, None]:
    """This process's batches, forever: every ``world``-th batch of each epoch's plan from ``rank`` on.

    The sampler's position counts the batches of all processes; an epoch with fewer batches than processes
    is an error that says what to change.
    """
    while True:
        if sampler.remaining() < world:
            sampler.next_epoch()
            if sampler.remaining() < world:
                raise ValueError(
                    f"an epoch holds {sampler.remaining()} batches, fewer than {world} processes: "
                    "lower batch_seconds or raise epoch_size"
                )
        plan, pos = sampler.epoch_batches(sampler.epoch), sampler.position
        rounds = (len(plan) - pos) // world
        mine = [plan[pos + r * world + rank] for r in range(rounds)]
        for batch in load(mine):
            sampler.advance(world)  # before the yield: a checkpoint taken after this step skips this batch
            yield batch


def open_frame_caches(
    model: SpeechEncoder,
    train: Sequence[Utterance],
    dev: Sequence[Utterance],
    cache_dir: str | os.PathLike[str],
    batch_seconds: float,
    device: torch.device,
    main: bool,
    barrier: Callable[[], None],
) -> tuple[FrameCache, FrameCache | None]:
    """Frame caches of the train and dev utterances: the main process computes what is missing, then the
    others open what it wrote (``barrier`` between the turns)."""
    from miner.train.features import FrameCache

    frames: FrameCache | None = None
    dev_frames: FrameCache | None = None
    for turn in (0, 1):
        if (turn == 0) == main:
            frames = FrameCache.build_or_open(model, train, cache_dir, batch_seconds, device, main)
            if dev:
                dev_frames = FrameCache.build_or_open(model, dev, cache_dir, batch_seconds, device, main)
        barrier()
    assert frames is not None
    return frames, dev_frames
