"""The offline Whisper-base backbone: ct2 parser, conversion to transformers, equivalence with ctranslate2.

Tiny tests build a random Whisper with transformers and write it with ctranslate2's own converter, so the
parser is checked against the real writer; the ``demo`` tests use the packaged Whisper-base weights.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch as safetensors_torch
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperEncoder

ctranslate2 = pytest.importorskip(
    "ctranslate2", reason="ctranslate2 (the `demo` extra) is not installed: pip install 'samu-miner[demo]'"
)
from ctranslate2.converters.transformers import WhisperLoader  # noqa: E402

from miner.encoders import whisper_ct2 as wc  # noqa: E402
from miner.encoders import whisper_packages  # noqa: E402
from miner.encoders.ct2_format import read_ct2_model  # noqa: E402

logger = logging.getLogger(__name__)


def _demo_weights_missing() -> str | None:
    try:
        whisper_packages.find_ct2_whisper_parts()
    except FileNotFoundError as err:
        return str(err)
    return None


_MISSING = _demo_weights_missing()
needs_weights = pytest.mark.skipif(_MISSING is not None, reason=f"demo weights absent: {_MISSING}")

TINY: dict[str, Any] = dict(
    vocab_size=64,
    num_mel_bins=8,
    d_model=16,
    encoder_layers=2,
    encoder_attention_heads=2,
    decoder_layers=1,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    max_source_positions=20,
    max_target_positions=12,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
    decoder_start_token_id=1,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WhisperForConditionalGeneration]:
    """A random tiny Whisper written as a ct2 float16 model folder by ctranslate2's own converter."""
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY)).eval()
    with torch.no_grad():  # non-zero biases and norms, so that the test sees more than ct2's aliases of 0/1
        for name, p in model.named_parameters():
            if "bias" in name or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    spec = WhisperLoader().get_model_spec(model)
    spec.register_vocabulary([f"tok{i}" for i in range(TINY["vocab_size"])])
    spec.validate()
    spec.optimize(quantization="float16")
    out = tmp_path_factory.mktemp("tiny_ct2")
    spec.save(str(out))
    return out, model


def _fp16(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float16).to(torch.float32).numpy()


def test_read_ct2_model_parses_ctranslate2_writer(tiny: tuple[Path, WhisperForConditionalGeneration]) -> None:
    ct2_dir, model = tiny
    tensors, info = read_ct2_model(ct2_dir / "model.bin")
    assert (info["binary_version"], info["spec"], info["revision"]) == (6, "WhisperSpec", 3)
    enc = model.model.encoder
    w = tensors["encoder/conv1/weight"]
    assert w.dtype == np.float16 and w.shape == (16, 8, 3)
    np.testing.assert_array_equal(w.astype(np.float32), _fp16(enc.conv1.weight))
    assert tensors["encoder/num_heads"].shape == () and int(tensors["encoder/num_heads"]) == 2
    assert info["dtypes"]["encoder/num_heads"] == "int16"
    # The tied output projection is stored once and aliased; the alias resolves to the same array.
    assert info["aliases"]["decoder/projection/weight"] == "decoder/embeddings/weight"
    assert tensors["decoder/projection/weight"] is tensors["decoder/embeddings/weight"]
    fused = tensors["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(fused[16:32], _fp16(enc.layers[1].self_attn.k_proj.weight))


def test_read_ct2_model_rejects_truncated_and_unknown_version(
    tiny: tuple[Path, WhisperForConditionalGeneration], tmp_path: Path
) -> None:
    data = (tiny[0] / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_model(tmp_path / "cut.bin")
    (tmp_path / "v9.bin").write_bytes((9).to_bytes(4, "little") + data[4:])
    with pytest.raises(ValueError, match="binary version 9"):
        read_ct2_model(tmp_path / "v9.bin")
    (tmp_path / "tail.bin").write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="unexpected bytes"):
        read_ct2_model(tmp_path / "tail.bin")
    with pytest.raises(FileNotFoundError):
        read_ct2_model(tmp_path / "absent.bin")


def test_convert_tiny_loads_strict_and_matches_weights(
    tiny: tuple[Path, WhisperForConditionalGeneration], tmp_path: Path
) -> None:
    ct2_dir, model = tiny
    out = wc.convert_ct2_whisper_encoder(ct2_dir / "model.bin", tmp_path / "enc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]  # no temp folder left beside it
    cfg = WhisperConfig.from_pretrained(out)
    for key in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins"):
        assert getattr(cfg, key) == TINY[key], key
    assert cfg.max_source_positions == TINY["max_source_positions"]
    enc = WhisperEncoder(cfg)
    state = safetensors_torch.load_file(out / "model.safetensors")
    enc.load_state_dict(state, strict=True)
    assert all(t.dtype == torch.float32 for t in state.values())
    for key, want in model.model.encoder.state_dict().items():
        np.testing.assert_array_equal(state[key].numpy(), _fp16(want), err_msg=key)
    fe = WhisperFeatureExtractor.from_pretrained(out)
    assert (fe.feature_size, fe.sampling_rate) == (8, 16000)
    with pytest.raises(FileExistsError, match="already exists"):
        wc.convert_ct2_whisper_encoder(ct2_dir / "model.bin", out)


def test_tiny_converted_encoder_matches_ct2_encode(
    tiny: tuple[Path, WhisperForConditionalGeneration], tmp_path: Path
) -> None:
    ct2_dir, _ = tiny
    out = wc.convert_ct2_whisper_encoder(ct2_dir / "model.bin", tmp_path / "enc")
    enc = WhisperEncoder(WhisperConfig.from_pretrained(out)).eval()
    enc.load_state_dict(safetensors_torch.load_file(out / "model.safetensors"), strict=True)
    feats = np.random.default_rng(0).standard_normal((2, 8, 40)).astype(np.float32)
    with torch.inference_mode():
        ours = enc(torch.from_numpy(feats)).last_hidden_state.numpy()
    ref = wc.ct2_encode(feats, model=wc.load_ct2_whisper(ct2_dir, intra_threads=1))
    assert ref.shape == ours.shape == (2, 20, 16)
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-5


def test_ct2_encode_rejects_bad_features(tiny: tuple[Path, WhisperForConditionalGeneration]) -> None:
    model = wc.load_ct2_whisper(tiny[0], intra_threads=1)
    with pytest.raises(ValueError, match="n_mels"):
        wc.ct2_encode(np.zeros((8, 40), np.float32), model=model)
    with pytest.raises(ValueError, match="expects 8"):
        wc.ct2_encode(np.zeros((1, 80, 40), np.float32), model=model)


def test_missing_packages_say_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(whisper_packages, "PART_DISTRIBUTIONS", ("samu-miner-no-such-package-part1",))
    with pytest.raises(FileNotFoundError, match=r"pip install 'samu-miner\[demo\]'"):
        whisper_packages.find_ct2_whisper_parts()
    with pytest.raises(FileNotFoundError, match=r"samu-miner\[demo\]"):
        wc.offline_whisper_encoder_dir(tmp_path)
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------------------------- packaged Whisper base


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("miner_home")


@needs_weights
@pytest.mark.demo
def test_find_parts_in_order() -> None:
    parts = whisper_packages.find_ct2_whisper_parts()
    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2"]
    assert all(p.stat().st_size > 0 for p in parts)


@needs_weights
@pytest.mark.demo
def test_real_model_header_and_names(demo_root: Path) -> None:
    ct2_dir = wc.ct2_model_dir(demo_root)
    assert ct2_dir == demo_root / "models" / "whisper-base-ct2"
    assert {"model.bin", "config.json", "vocabulary.txt"} <= {p.name for p in ct2_dir.iterdir()}
    tensors, info = read_ct2_model(ct2_dir / "model.bin")
    assert (info["binary_version"], info["spec"]) == (6, "WhisperSpec")
    assert info["aliases"] == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert tensors["encoder/conv1/weight"].shape == (512, 80, 3)
    assert tensors["encoder/conv1/weight"].dtype == np.float16
    assert tensors["encoder/position_encodings/encodings"].shape == (1500, 512)
    assert tensors["decoder/embeddings/weight"].shape == (51865, 512)
    assert tensors["encoder/layer_5/self_attention/linear_0/weight"].shape == (1536, 512)
    assert "encoder/layer_6/ffn/linear_0/weight" not in tensors
    k_bias = tensors["encoder/layer_0/self_attention/linear_0/bias"][512:1024]
    assert not np.any(k_bias)


@needs_weights
@pytest.mark.demo
def test_real_conversion_loads_strict_and_is_cached(demo_root: Path) -> None:
    d = wc.offline_whisper_encoder_dir(demo_root)
    assert d == demo_root / "models" / "whisper-base-encoder"
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # temp folders cleaned up
    cfg = WhisperConfig.from_pretrained(d)
    got = (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.encoder_ffn_dim)
    assert got == (512, 6, 8, 2048)
    assert (cfg.num_mel_bins, cfg.max_source_positions, cfg.vocab_size) == (80, 1500, 51865)
    assert (cfg.eos_token_id, cfg.decoder_start_token_id) == (50257, 50258)
    WhisperEncoder(cfg).load_state_dict(safetensors_torch.load_file(d / "model.safetensors"), strict=True)
    assert json.loads((d / "conversion.json").read_text())["packages"] == whisper_packages.source_versions()
    mtime = (d / "model.safetensors").stat().st_mtime_ns
    assert wc.offline_whisper_encoder_dir(demo_root) == d
    assert (d / "model.safetensors").stat().st_mtime_ns == mtime  # not converted twice


@needs_weights
@pytest.mark.demo
def test_incomplete_cache_is_rebuilt(tmp_path: Path) -> None:
    d = wc.offline_whisper_encoder_dir(tmp_path)
    (d / "model.safetensors").unlink()
    assert wc.offline_whisper_encoder_dir(tmp_path) == d
    assert (d / "model.safetensors").is_file()
    shutil.rmtree(tmp_path / "models")


@needs_weights
@pytest.mark.demo
@pytest.mark.slow
def test_real_encoder_matches_ctranslate2(demo_root: Path) -> None:
    d = wc.offline_whisper_encoder_dir(demo_root)
    enc = WhisperEncoder(WhisperConfig.from_pretrained(d)).eval()
    enc.load_state_dict(safetensors_torch.load_file(d / "model.safetensors"), strict=True)
    # 5 s: a 220 Hz tone with a 3 Hz tremolo plus seeded noise, padded by the extractor to 30 s (3000 frames).
    sr = 16_000
    t = np.arange(5 * sr) / sr
    noise = np.random.default_rng(0).standard_normal(t.size)
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * noise).astype(
        np.float32
    )
    feats = WhisperFeatureExtractor.from_pretrained(d)(audio, sampling_rate=sr, return_tensors="np")
    feats = feats.input_features.astype(np.float32)
    assert feats.shape == (1, 80, 3000)
    with torch.inference_mode():
        ours = enc(torch.from_numpy(feats)).last_hidden_state.numpy()
    ref = wc.ct2_encode(feats, model=wc.load_ct2_whisper(wc.ct2_model_dir(demo_root), intra_threads=1))
    assert ours.shape == ref.shape == (1, 1500, 512)
    rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
    max_abs = float(np.abs(ours - ref).max())
    logger.info("Whisper-base transformers vs ctranslate2: max abs %.3g, relative %.3g", max_abs, rel)
    assert rel < 1e-3
    assert max_abs < 1e-2 * float(np.abs(ref).max())


def test_killed_conversion_leaves_no_folder(
    tiny: tuple[Path, WhisperForConditionalGeneration], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.numpy

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        wc.convert_ct2_whisper_encoder(tiny[0] / "model.bin", tmp_path / "enc")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp folder
