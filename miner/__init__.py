"""SAMU-XLSR speech-translation bitext mining: embed speech and text into one space, search, mine pairs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "mine_embeddings"]


def __getattr__(name: str):  # lazy: importing `miner` must not import torch
    if name == "mine_embeddings":
        from miner.mine import mine_embeddings

        return mine_embeddings
    raise AttributeError(name)
