"""Retrieval signals on the dev set, beside the dev loss: does each clip find its own text among all of them?"""

from __future__ import annotations

import numpy as np

from miner.train.targets import normalise_rows


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
