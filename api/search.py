"""Query checks and the search step shared by every search endpoint (no HTTP here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from api.metrics import Metrics
from miner.corpus import bad_character
from miner.databases import Database, Hit
from miner.encoders.text import TextFit, fit_text

__all__ = ["InvalidQuery", "RequestTooLarge", "check_k", "check_text", "fit_texts", "search_one"]


class InvalidQuery(ValueError):
    """A query parameter is out of its allowed range; the message names it and the range."""


class RequestTooLarge(ValueError):
    """One request asks for more work (audio seconds, text tokens) than the server takes per request."""


def check_text(text: str, max_chars: int, where: str = "text") -> str:
    """Return ``text`` if it has 1 to ``max_chars`` characters and no control character, else raise
    :class:`InvalidQuery` naming ``where`` (a NUL would make the text encoder read only the text's prefix)."""
    if not text or len(text) > max_chars:
        raise InvalidQuery(f"{where} has {len(text)} characters; allowed 1 to {max_chars}")
    bad = bad_character(text)
    if bad is not None:
        raise InvalidQuery(
            f"{where} holds control character {bad}: remove NUL and other control characters (tab, CR and "
            "LF are allowed)"
        )
    return text


async def fit_texts(encoder: Any, texts: Sequence[str]) -> list[TextFit]:
    """Each text as the encoder reads it (cut to its token limit, token counts); long inputs off the loop."""
    if sum(len(t) for t in texts) <= 2048:  # a few tokenizer calls: cheaper than a thread hand-off
        return [fit_text(encoder, t) for t in texts]
    return await asyncio.to_thread(lambda: [fit_text(encoder, t) for t in texts])


def check_k(k: int, max_k: int) -> int:
    """Return ``k`` if 1 <= k <= max_k, else raise :class:`InvalidQuery`."""
    if not 1 <= k <= max_k:
        raise InvalidQuery(f"k={k} is out of range: ask for 1 to {max_k} results (the server's max_k)")
    return k


async def search_one(db: Database, vector: np.ndarray, k: int, metrics: Metrics | None = None) -> list[Hit]:
    """Search one query vector (float32 (dim,)) in a worker thread, so a large index never blocks the loop."""
    start = time.perf_counter()
    hits = await asyncio.to_thread(db.search, vector[None, :], k)
    if metrics is not None:
        metrics.observe_search(db.name, time.perf_counter() - start)
    return hits[0]
