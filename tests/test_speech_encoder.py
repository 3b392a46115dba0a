"""SAMU speech encoder: real transformers backbones (tiny, random) through the real loading code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from miner.encoders.samu import HEAD_WEIGHTS, SpeechEncoder
from tests.conftest import make_clip


@pytest.fixture(params=["wav2vec2", "whisper"])
def backbone_dir(request: pytest.FixtureRequest, tiny_wav2vec2_dir: Path, tiny_whisper_dir: Path) -> Path:
    return tiny_wav2vec2_dir if request.param == "wav2vec2" else tiny_whisper_dir


TINY_ADAPTER = {"layers": 2, "dim": 16, "heads": 2, "ffn": 32, "stride": 2}


@pytest.fixture(params=["paper-head", "adapter-head"])
def model(request: pytest.FixtureRequest, backbone_dir: Path) -> SpeechEncoder:
    adapter = TINY_ADAPTER if request.param == "adapter-head" else None
    return SpeechEncoder.from_backbone(
        str(backbone_dir), dim=24, space_id="test-24", teacher="tiny-st", adapter=adapter
    ).eval()


def test_shapes_dtypes_norms_and_order(model: SpeechEncoder, rng: np.random.Generator) -> None:
    clips = [make_clip(rng, s) for s in (1.0, 2.5, 0.6, 1.7, 3.1)]
    emb = model.encode(clips, batch_size=2)
    assert emb.shape == (5, 24) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([model.encode([c], batch_size=1)[0] for c in clips])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-4)  # order restored after length sorting
    assert model.dim == 24 and model.space_id == "test-24"


def test_padding_invariance(model: SpeechEncoder, rng: np.random.Generator) -> None:
    short = make_clip(rng, 0.8)
    long = make_clip(rng, 4.0)  # 5x longer
    alone = model.encode([short])[0]
    batched = model.encode([short, long], batch_size=2)[0]
    assert float(alone @ batched) > 0.9999


def test_save_load_round_trip(model: SpeechEncoder, tmp_path: Path, rng: np.random.Generator) -> None:
    clips = [make_clip(rng, 1.2), make_clip(rng, 0.7)]
    before = model.encode(clips)
    folder = model.save_pretrained(tmp_path / "samu")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "samu-xlsr" and config["dim"] == 24 and config["space_id"] == "test-24"
    assert config["teacher"] == "tiny-st" and config["backbone_type"] == model.config.backbone_type
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))  # safetensors only
    loaded = SpeechEncoder.from_pretrained(folder)
    np.testing.assert_array_equal(loaded.encode(clips), before)


def test_head_only_folder_reloads_backbone_from_source(model: SpeechEncoder, tmp_path: Path) -> None:
    folder = model.save_pretrained(tmp_path / "head", include_backbone=False)
    assert (folder / HEAD_WEIGHTS).is_file() and not (folder / "model.safetensors").exists()
    loaded = SpeechEncoder.from_pretrained(folder)
    for name, p in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], p)


def test_whisper_runs_at_clip_length_not_30s(tiny_whisper_dir: Path, rng: np.random.Generator) -> None:
    model = SpeechEncoder.from_backbone(str(tiny_whisper_dir), dim=8, space_id="s", teacher="t").eval()
    inputs = model.backbone.prepare([make_clip(rng, 2.0)])
    frames, mask = model.backbone(inputs)
    assert frames.shape[1] == 100 and bool(mask.all())  # 2 s -> 200 mel frames -> 100 encoder frames


def test_whisper_longer_than_30s_is_chunked(tiny_whisper_dir: Path, rng: np.random.Generator) -> None:
    model = SpeechEncoder.from_backbone(str(tiny_whisper_dir), dim=8, space_id="s", teacher="t").eval()
    inputs = model.backbone.prepare([make_clip(rng, 31.0)])
    frames, mask = model.backbone(inputs)
    assert frames.shape[1] == 3000 and int(mask.sum()) == 1550
    assert np.isfinite(model.encode([make_clip(rng, 31.0)])).all()


def test_pooling_ignores_padding_frames() -> None:
    from miner.encoders.samu import AttentionPooling

    pool = AttentionPooling(4)
    frames = torch.randn(1, 6, 4)
    mask = torch.tensor([[True, True, True, False, False, False]])
    garbage = frames.clone()
    garbage[:, 3:] = 1e4
    torch.testing.assert_close(pool(frames, mask), pool(garbage, mask))
    torch.testing.assert_close(pool(frames, mask), pool(frames[:, :3], mask[:, :3]))


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_adapter_ignores_padding_frames(stride: int) -> None:
    from miner.encoders.samu import FrameAdapter

    torch.manual_seed(0)
    adapter = FrameAdapter(8, layers=2, dim=16, heads=2, ffn=32, stride=stride).eval()
    frames = torch.randn(1, 7, 8)
    mask = torch.tensor([[True] * 5 + [False] * 2])
    garbage = frames.clone()
    garbage[:, 5:] = 1e4
    out, out_mask = adapter(frames, mask)
    assert out.shape == (1, -(-7 // stride), 16) and int(out_mask.sum()) == -(-5 // stride)
    out_garbage, _ = adapter(garbage, mask)
    torch.testing.assert_close(out[out_mask], out_garbage[out_mask])
    alone, _ = adapter(frames[:, :5], mask[:, :5])
    torch.testing.assert_close(out[out_mask], alone[0], atol=1e-5, rtol=1e-5)


def test_adapter_weights_travel_in_the_head_folder(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    model = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=8, space_id="s", teacher="t", adapter=TINY_ADAPTER
    )
    names = {n for n, _ in model.named_parameters() if not n.startswith("backbone.")}
    assert {n for n in names if n.startswith("adapter.")} and {id(p) for p in model.head_parameters()} == {
        id(p) for n, p in model.named_parameters() if n in names
    }
    folder = model.save_pretrained(tmp_path / "head", include_backbone=False)
    assert json.loads((folder / "config.json").read_text())["adapter"] == TINY_ADAPTER
    loaded = SpeechEncoder.from_pretrained(folder)
    assert loaded.adapter is not None and loaded.adapter.stride == 2


def test_bad_inputs_raise_clear_errors(model: SpeechEncoder, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty 1-D"):
        model.encode([np.zeros(0, dtype=np.float32)])
    with pytest.raises(TypeError, match="list of waveforms"):
        model.encode(np.zeros(16000, dtype=np.float32))
    for n in (1, 200, 399):  # a torch padding / kernel-size error before the check
        with pytest.raises(ValueError, match=f"#1 has {n} samples.*at least 400"):
            model.encode([np.zeros(16000, dtype=np.float32), np.zeros(n, dtype=np.float32)])
    assert model.encode([np.full(400, 0.1, dtype=np.float32)]).shape == (1, model.dim)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpeechEncoder.from_pretrained(tmp_path / "nope")
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(FileNotFoundError, match="not a SAMU model folder"):
        SpeechEncoder.from_pretrained(tmp_path / "notamodel")


def test_frozen_feature_encoder_has_no_grad(model: SpeechEncoder) -> None:
    model.backbone.freeze_feature_encoder()
    trainable = {id(p) for p in model.backbone.transformer_parameters()}
    frozen = [p for p in model.backbone.parameters() if not p.requires_grad]
    assert frozen and all(id(p) not in trainable for p in frozen)
