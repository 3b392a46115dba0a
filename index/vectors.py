"""Embeddings as every database file stores them: validated, float32, unit L2 norm."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

__all__ = ["prepare_vectors"]


def prepare_vectors(vectors: Any, dim: int) -> np.ndarray:
    """Validate embeddings and return an L2-normalised float32 copy.

    Args:
        vectors: (n, dim) array-like of real numbers.
        dim: the expected dimension.

    Returns:
        (n, dim) float32 C-contiguous array whose rows have unit L2 norm.

    Raises:
        ValueError: wrong shape or dim, non-finite values, or an all-zero row (it has no direction).
    """
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"vectors have shape {x.shape}; expected (n, {dim})")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"vectors have dtype {x.dtype}; expected float32")
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"vector row {int(np.argmin(finite))} has NaN or inf values; fix the encoder output")
    faiss.normalize_L2(x)
    zero = ~(np.abs(x).sum(axis=1) > 0)
    if zero.any():
        raise ValueError(f"vector row {int(np.argmax(zero))} is all zeros and cannot be L2-normalised")
    return x
