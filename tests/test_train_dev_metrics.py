"""Dev retrieval signals of the trainer (miner.train.dev_metrics) on hand-made vectors."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from miner.train.dev_metrics import dev_recall_at_1, dev_recall_at_1_translations, embed_dev


def test_own_target_among_all_dev_targets() -> None:
    targets = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # normalised inside: scale does not matter
    z = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)  # the third clip lands on the first target
    assert dev_recall_at_1(z, targets) == pytest.approx(2 / 3)


def test_translations_are_searched_once_each() -> None:
    # Rows 0 and 2 are two languages of one meaning (translation id 0); row 1 is another meaning (id 1).
    trans = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ids = np.array([0, 1, 0])
    z = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]], np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    assert dev_recall_at_1_translations(z, trans, ids) == pytest.approx(2 / 3)  # the third finds id 1
    assert dev_recall_at_1_translations(z[:2], trans[:2], ids[:2]) == 1.0


def test_embed_dev_puts_rows_back_in_order_and_averages_the_distance() -> None:
    # Batches come in bucket order (rows 2, 0 then 1); the "student" passes its input through, so row i's
    # embedding is feats[i] normalised, and its distance to the target is 1 - cos(feats[i], targets[i]).
    feats = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    batches = [np.array([2, 0]), np.array([1])]
    loader = [{"feats": feats[b], "targets": targets[b]} for b in batches]
    z, distance = embed_dev(
        lambda batch: batch["feats"], batches, loader, torch.device("cpu"), contextlib.nullcontext
    )
    assert z.dtype == np.float32 and z.shape == (3, 2)
    np.testing.assert_allclose(z, [[1.0, 0.0], [0.0, 1.0], [2**-0.5, 2**-0.5]], atol=1e-6)
    assert distance == pytest.approx((0.0 + 1.0 + 0.0) / 3)  # only row 1 (orthogonal to its target) is off
