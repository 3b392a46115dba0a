"""Checks of mining inputs: thresholds, id arrays and embedding matrices (normalised copies).

Each raises ValueError naming the bad argument and what to pass instead."""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["as_ids", "check_threshold", "check_unique_sorted", "normalised", "warn_nonpositive_means"]

logger = logging.getLogger("miner.mine")


def check_threshold(threshold: float) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}") from None
    if np.isnan(t):
        raise ValueError("threshold is NaN: pass a number (scores strictly above it are kept)")
    return t


def as_ids(ids: np.ndarray, what: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise ValueError(f"{what} must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if (ids < 0).any():
        raise ValueError(f"{what} must be >= 0, got {ids[ids < 0][:5].tolist()}")
    return ids


def check_unique_sorted(ids: np.ndarray) -> None:
    dup = ids[1:][ids[1:] == ids[:-1]]
    if dup.size:
        raise ValueError(f"backward ids must be unique, got duplicates {np.unique(dup)[:5].tolist()}")


def normalised(a: np.ndarray, name: str, row_ids: np.ndarray | None = None) -> np.ndarray:
    """A float32 L2-normalised copy; non-finite values and all-zero rows raise ValueError."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, dim) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    finite = np.isfinite(a).all(axis=1)
    rows = np.arange(len(a)) if row_ids is None else np.asarray(row_ids)
    if not finite.all():
        raise ValueError(f"{name} has NaN or inf in rows {rows[~finite][:5].tolist()}: clean the embeddings")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        raise ValueError(
            f"{name} has all-zero rows {rows[zero][:5].tolist()}: they have no direction, drop them first"
        )
    return np.ascontiguousarray(a / norms, dtype=np.float32)


def warn_nonpositive_means(r_x: np.ndarray, r_y: np.ndarray) -> None:
    if ((r_x[:, None] + r_y) <= 0).any():
        logger.warning(
            "some neighbourhood means are <= 0: the ratio margin is undefined there (inf / sign flip); "
            "use margin='distance' for such near-orthogonal data"
        )
