"""Margin scoring of candidate pairs, exactly as LASER's ``source/mine_bitexts.py`` defines it (numpy only).

On L2-normalised vectors, ``cos(x, y)`` is an inner product. ``r_x`` is the mean cosine of ``x`` to its k
nearest targets, ``r_y`` the mean cosine of ``y`` to its k nearest sources, and

    score(x, y) = margin(cos(x, y), (r_x + r_y) / 2)

with ``ratio`` a / b (the default), ``distance`` a - b or ``absolute`` a. The margin discounts "hub" vectors
that are close to everything, which a raw cosine threshold cannot.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

import numpy as np

__all__ = ["Margin", "knn_mean", "margin_scores", "parse_margin"]


E = TypeVar("E", bound=Enum)


class Margin(str, Enum):
    """The margin function applied to a cosine and the mean of both neighbourhoods."""

    RATIO = "ratio"
    DISTANCE = "distance"
    ABSOLUTE = "absolute"

    def apply(self, cos: np.ndarray | float, mean: np.ndarray | float) -> np.ndarray:
        """Apply the margin elementwise.

        Args:
            cos: cosines of candidate pairs, any shape.
            mean: ``(r_x + r_y) / 2`` broadcastable to ``cos``.

        Returns:
            float64 array of the broadcast shape. ``ratio`` follows LASER and does not guard the denominator:
            a mean <= 0 (possible only for near-orthogonal data) gives inf or a sign flip.
        """
        a = np.asarray(cos, dtype=np.float64)
        b = np.asarray(mean, dtype=np.float64)
        if self is Margin.RATIO:
            with np.errstate(divide="ignore", invalid="ignore"):
                return a / b
        if self is Margin.DISTANCE:
            return a - b
        return np.broadcast_to(a, np.broadcast_shapes(a.shape, b.shape)).copy()


def parse_margin(value: str | Margin) -> Margin:
    """Turn a name such as ``"ratio"`` into a :class:`Margin`.

    Raises:
        ValueError: unknown name; the message lists the choices.
    """
    return parse_choice(Margin, value, "margin")


def parse_choice(enum: type[E], value: str | E, what: str) -> E:
    """``value`` as a member of the string enum ``enum``; a ValueError naming ``what`` and the choices if unknown."""
    if isinstance(value, enum):
        return value
    try:
        return enum(str(value).lower())
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise ValueError(f"unknown {what} {value!r}: choose one of {choices}") from None


def knn_mean(sims: np.ndarray, k: int | None = None) -> np.ndarray:
    """Mean similarity of each row to its k nearest neighbours.

    Args:
        sims: (n, k') similarities of each row to its nearest neighbours, best first (as faiss returns them),
            float32 or float64.
        k: how many leading columns to average; ``None`` or a value above k' uses all k' columns (a side with
            fewer than k items gives fewer neighbours, as in LASER's ``min(len(y), k)``).

    Returns:
        (n,) float64 means (accumulated in float64).

    Raises:
        ValueError: ``sims`` is not 2-D, has no column, or ``k`` < 1.
    """
    sims = np.asarray(sims)
    if sims.ndim != 2:
        raise ValueError(f"sims must be a 2-D (n, k) array, got shape {sims.shape}")
    if sims.shape[1] == 0:
        raise ValueError("sims has no column: every row needs at least one neighbour")
    if k is not None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        sims = sims[:, : min(k, sims.shape[1])]
    return sims.mean(axis=1, dtype=np.float64)


def margin_scores(
    cos: np.ndarray, r_x: np.ndarray, r_y: np.ndarray, margin: str | Margin = Margin.RATIO
) -> np.ndarray:
    """Vectorised margin score ``margin(cos, (r_x + r_y) / 2)``.

    Args:
        cos: cosines of candidate pairs, any shape (e.g. (n, k) forward similarities).
        r_x: source neighbourhood means broadcastable to ``cos`` (e.g. (n, 1)).
        r_y: target neighbourhood means broadcastable to ``cos`` (e.g. (n, k) gathered by candidate id).
        margin: ``ratio``, ``distance`` or ``absolute`` (a name or a :class:`Margin`).

    Returns:
        float64 scores of the broadcast shape.
    """
    m = parse_margin(margin)
    mean = (np.asarray(r_x, dtype=np.float64) + np.asarray(r_y, dtype=np.float64)) / 2.0
    return m.apply(cos, mean)
