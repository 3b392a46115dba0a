"""CUDA paths, skipped without a GPU: the SAMU encoder under autocast, the trainer with amp on the GPU."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from miner.encoders.samu import SpeechEncoder
from tests._train_fixtures import make_config, read_metrics
from tests.conftest import make_clip

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_cuda_encode_matches_cpu(tiny_wav2vec2_dir: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    SpeechEncoder.from_backbone(
        str(tiny_wav2vec2_dir), dim=24, space_id="test-24", teacher="tiny"
    ).save_pretrained(tmp_path / "m")
    cpu = SpeechEncoder.from_pretrained(tmp_path / "m", device="cpu")
    gpu = SpeechEncoder.from_pretrained(tmp_path / "m", device="cuda")
    assert gpu.device.type == "cuda"
    clips = [make_clip(rng, s) for s in (0.5, 1.7, 0.9, 2.4, 1.1)]
    a, b = cpu.encode(clips, batch_size=2), gpu.encode(clips, batch_size=2)
    assert b.dtype == np.float32 and b.shape == (5, 24)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(1).min() > 0.995  # bf16/fp16 autocast against fp32
    assert ((b @ a.T).argmax(1) == np.arange(5)).all()  # rows stay in input order


def test_trainer_runs_amp_on_cuda_and_saves_fp32(
    corpus: Path, tiny_wav2vec2_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    from miner.train.checkpoint import capture_rng
    from miner.train.loop import train

    cfg = make_config(
        corpus,
        tiny_wav2vec2_dir,
        spread_st_dir,
        tmp_path / "run",
        max_updates=6,
        head_only_updates=2,
        amp=True,
    )
    final = train(cfg)
    losses = [m["loss"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    model = SpeechEncoder.from_pretrained(final, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast never leaks into saved weights
    assert "cuda" in capture_rng()  # checkpoints carry the GPU's RNG too


def test_cuda_bf16_weights_seconds_batches_and_prefetch_match_cpu(
    tiny_wav2vec2_dir: Path, tiny_whisper_dir: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    """The GPU inference path (weights cast once, batches by audio seconds, inputs prepared ahead in pinned
    memory) against fp32 on the CPU, for both backbones."""
    clips = [make_clip(rng, s) for s in (0.5, 3.1, 0.9, 2.4, 1.1, 0.7)]
    for name, folder in (("w2v", tiny_wav2vec2_dir), ("whisper", tiny_whisper_dir)):
        SpeechEncoder.from_backbone(str(folder), dim=24, space_id="t", teacher="t").save_pretrained(
            tmp_path / name
        )
        cpu = SpeechEncoder.from_pretrained(tmp_path / name, device="cpu")
        gpu = SpeechEncoder.from_pretrained(tmp_path / name, device="cuda").for_inference()
        assert next(gpu.parameters()).dtype in (torch.bfloat16, torch.float16)
        a = cpu.encode(clips, batch_size=2)
        b = gpu.encode(clips, batch_size=8, batch_seconds=4.0)
        assert (np.sum(a * b, axis=1) > 0.98).all(), name
