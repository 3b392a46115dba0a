"""The trainer's batch plumbing (miner.train.batches): sharing an epoch between processes, and batch dicts."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from miner.train.batches import batch_stream, process_batches
from miner.train.data import Utterance
from miner.train.sampling import LanguageSampler


def pairs(indices: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    return [indices[i : i + 2] for i in range(0, len(indices), 2)]


def sampler(n: int = 12) -> LanguageSampler:
    return LanguageSampler(["fr", "de"] * (n // 2), alpha=1.0, seed=3, batcher=pairs)


def as_lists(batches: list[np.ndarray]) -> Iterator[dict]:
    for b in batches:
        yield {"rows": sorted(b.tolist())}


def test_processes_split_each_epoch_and_move_the_sampler_before_each_batch() -> None:
    plans = {}
    for rank in (0, 1):
        s = sampler()
        stream = process_batches(s, 2, rank, as_lists)
        first = next(stream)
        assert s.position == 2  # already past this round's two batches: a checkpoint now resumes after them
        plans[rank] = [first["rows"]] + [b["rows"] for b in itertools.islice(stream, 2)]
    together = sorted(r for rows in plans.values() for r in map(tuple, rows))
    assert together == sorted(
        tuple(sorted(b.tolist())) for b in sampler().epoch_batches(0)
    )  # each batch once
    assert not set(map(tuple, plans[0])) & set(map(tuple, plans[1]))


def test_an_epoch_smaller_than_the_processes_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than 8 processes: lower batch_seconds or raise epoch_size"):
        next(process_batches(sampler(4), 8, 0, as_lists))


class Frames:
    """A frame cache stand-in: (B, 3, 2) frames whose values are the row ids."""

    def batch(self, idx: list[int]) -> dict[str, torch.Tensor]:
        frames = torch.tensor(idx, dtype=torch.float32)[:, None, None].expand(-1, 3, 2)
        return {"frames": frames, "mask": torch.ones(len(idx), 3, dtype=torch.bool)}


def test_cached_batches_carry_their_rows_and_seconds() -> None:
    utts = [
        Utterance(id=f"u{i}", audio=Path("a.wav"), text="t", lang="fr", duration=1.0 + i) for i in range(4)
    ]
    rows = {"targets": np.arange(8, dtype=np.float32).reshape(4, 2), "text_ids": np.array([5, 6, 7, 8])}
    out = list(batch_stream(utts, rows, [np.array([3, 1])], frames=Frames(), prepare=lambda w: {}))
    (b,) = out
    assert b["n"] == 2 and b["seconds"] == pytest.approx(4.0 + 2.0)
    assert b["text_ids"].tolist() == [8, 6] and b["targets"].tolist() == [[6.0, 7.0], [2.0, 3.0]]
    assert b["frames"][:, 0, 0].tolist() == [3.0, 1.0]
