"""The dev pass of a training run: the dev loss, and retrieval signals beside it (does each clip find its own text
among all of them?)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from miner.train.student import to_device
from miner.train.targets import normalise_rows


@torch.no_grad()
def embed_dev(
    student: Callable[[dict[str, Any]], torch.Tensor],
    batches: list[np.ndarray],
    loader: Iterable[dict[str, Any]],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> tuple[np.ndarray, float]:
    """Embed every dev row once; the caller sets eval mode (no dropout, no masking).

    Args:
        student: maps a model batch to speech embeddings (b, dim).
        batches: the row indices of each batch, in the order ``loader`` yields them.
        loader: model batches holding at least ``targets`` (b, dim) teacher vectors.
        device: where the student runs.
        autocast: a fresh mixed-precision context per batch (a null context on CPU).

    Returns:
        float32 (n, dim) unit embeddings in row order (n = all rows of ``batches``), and the mean cosine distance
        ``1 - cos(z, target)`` over the rows: the dev loss.
    """
    total, rows, order = 0.0, [], []
    for idx, batch in zip(batches, loader, strict=True):
        batch = to_device(batch, device)
        with autocast():
            z = student(batch).float()
        total += float((1.0 - F.cosine_similarity(z, batch["targets"].float(), dim=-1)).sum())
        rows.append(F.normalize(z, dim=-1).cpu().numpy())
        order.append(np.asarray(idx))
    index = np.concatenate(order)
    z_all = np.empty((len(index), rows[0].shape[1]), dtype=np.float32)
    z_all[index] = np.concatenate(rows)
    return z_all, total / len(index)


def dev_recall_at_1(z: np.ndarray, targets: np.ndarray) -> float:
    """Share of dev clips whose nearest dev target (cosine, among all dev targets) is their own.

    Args:
        z: float32 (n, dim) unit speech embeddings, row i = dev clip i.
        targets: (n, dim) teacher targets of the same rows (normalised here).
    """
    t = normalise_rows(np.asarray(targets, dtype=np.float32))
    return float(np.mean((z @ t.T).argmax(1) == np.arange(len(z))))


def dev_recall_at_1_translations(z: np.ndarray, trans_targets: np.ndarray, trans_ids: np.ndarray) -> float:
    """X->EN on the dev set: share of clips whose nearest distinct translation is their own.

    Args:
        z: float32 (n, dim) unit speech embeddings.
        trans_targets: (n, dim) teacher vectors of each row's translation (rows sharing a translation repeat it).
        trans_ids: int64 (n,) id of each row's translation, 0..m-1; the search side holds each id once.
    """
    first = np.unique(trans_ids, return_index=True)[1]  # one row per distinct translation, in id order
    distinct = normalise_rows(np.asarray(trans_targets[first], dtype=np.float32))
    return float(np.mean((z @ distinct.T).argmax(1) == trans_ids))
