"""SpeechEncoder.encode's GPU-minded paths, run on the CPU: batches by audio seconds, the prefetch thread,
weights cast for inference. Each must give the embeddings of the plain path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miner.encoders.batching import budget_batches
from miner.encoders.samu import SpeechEncoder
from tests.conftest import make_clip


@pytest.fixture(params=["wav2vec2", "whisper"])
def model(request: pytest.FixtureRequest, tiny_wav2vec2_dir: Path, tiny_whisper_dir: Path) -> SpeechEncoder:
    folder = tiny_wav2vec2_dir if request.param == "wav2vec2" else tiny_whisper_dir
    adapter = {"layers": 1, "dim": 16, "heads": 2, "ffn": 32, "stride": 2}
    return SpeechEncoder.from_backbone(str(folder), dim=24, space_id="t-24", teacher="t", adapter=adapter).eval()


def test_budget_batches_hold_the_padded_budget():
    lengths = [10, 50, 20, 50, 5, 30, 40, 1]
    batches = list(budget_batches(lengths, max_items=3, max_padded=100))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    # one item over the budget is a batch of its own; no budget is the count-only batching
    assert [b.tolist() for b in budget_batches([500, 1], 4, 100)] == [[0], [1]]
    assert [b.tolist() for b in budget_batches([3, 1, 2], 2, None)] == [[0, 2], [1]]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(budget_batches([1], 0, 10))


def test_batch_seconds_and_prefetch_give_the_plain_embeddings(model, rng):
    clips = [make_clip(rng, s) for s in (0.5, 2.5, 1.0, 3.0, 0.7, 1.9)]
    plain = model.encode(clips, batch_size=2, prefetch=False)
    by_seconds = model.encode(clips, batch_size=8, batch_seconds=4.0)
    prefetched = model.encode(clips, batch_size=3, batch_seconds=6.0, prefetch=True)
    np.testing.assert_allclose(by_seconds, plain, atol=1e-4)
    np.testing.assert_allclose(prefetched, plain, atol=1e-4)
    assert model.last_speed is not None and model.last_speed.audio_seconds == pytest.approx(9.6, abs=0.01)


def test_weights_cast_for_inference_stay_close_to_fp32(model, rng):
    clips = [make_clip(rng, s) for s in (0.6, 1.8, 2.4)]
    ref = model.encode(clips, batch_size=2)
    assert model.for_inference() is model and next(model.parameters()).dtype == torch.float32  # CPU: no-op
    model.for_inference(torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert not any(p.requires_grad for p in model.parameters())
    got = model.encode(clips, batch_size=2, batch_seconds=3.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (np.sum(got * ref, axis=1) > 0.98).all()
