"""Distillation loop on tiny random backbones and a tiny sentence-transformers teacher (offline, seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests._train_fixtures import make_config, read_metrics


# -- the loss ------------------------------------------------------------------------------------------------
def test_distill_loss_cosine_and_infonce() -> None:
    from miner.train.loop import distill_loss

    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss, cos = distill_loss(3 * t, t)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and float(cos) == float(loss)  # scale-free
    loss, _ = distill_loss(torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]), t)
    assert float(loss) == pytest.approx(1.0)  # cos = 0, 0, 0
    # InfoNCE: rows 1 and 2 share a text, so neither is a negative of the other.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ids = torch.tensor([0, 1, 1])
    total, cos = distill_loss(z, t, ids, contrastive_weight=1.0, temperature=1.0)
    e = float(np.e)
    row0 = -np.log(e / (e + 1.0 + 1.0))  # logits (1, 0, 0)
    row12 = -np.log(e / (e + 1.0))  # logits (0, 1, [masked])
    assert float(total) == pytest.approx((row0 + 2 * row12) / 3, rel=1e-5)
    assert float(cos) == pytest.approx(0.0, abs=1e-6)


def test_distill_loss_over_a_bank_is_a_softmax_over_all_bank_rows() -> None:
    from miner.train.loop import distill_loss

    torch.manual_seed(0)
    z = torch.randn(4, 8)
    bank = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    ids = torch.tensor([3, 0, 7, 3])
    total, cos = distill_loss(z, bank[ids], ids, contrastive_weight=0.5, temperature=0.1, bank=bank)
    logits = torch.nn.functional.normalize(z, dim=-1) @ bank.T / 0.1
    by_hand = -torch.log_softmax(logits, dim=-1)[torch.arange(4), ids].mean()
    assert float(total) == pytest.approx(float(cos + 0.5 * by_hand), rel=1e-5)
    # A bank holding exactly the batch's (distinct) targets is the in-batch loss again.
    distinct = torch.tensor([3, 0, 7, 5])
    t = bank[distinct]
    in_batch, _ = distill_loss(z, t, distinct, contrastive_weight=1.0, temperature=0.1)
    over_bank, _ = distill_loss(z, t, torch.arange(4), contrastive_weight=1.0, temperature=0.1, bank=t)
    assert float(over_bank) == pytest.approx(float(in_batch), rel=1e-5)
    with pytest.raises(ValueError, match="needs text_ids"):
        distill_loss(z, t, None, contrastive_weight=1.0, bank=bank)


# -- freeze phases -------------------------------------------------------------------------------------------
_CNN_PREFIX = {
    "wav2vec2": ("model.feature_extractor.",),
    "whisper": ("encoder.conv1.", "encoder.conv2.", "encoder.embed_positions."),
}


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper"])
def test_backbone_frozen_in_head_phase_and_cnn_frozen_after(
    kind: str,
    corpus: Path,
    tiny_wav2vec2_dir: Path,
    tiny_whisper_dir: Path,
    spread_st_dir: Path,
    tmp_path: Path,
) -> None:
    from miner.encoders.backbones import load_pretrained_backbone
    from miner.encoders.samu import SpeechEncoder
    from miner.train.loop import train

    backbone = tiny_wav2vec2_dir if kind == "wav2vec2" else tiny_whisper_dir
    cfg = make_config(corpus, backbone, spread_st_dir, tmp_path / "run", save_every=3)
    final = train(cfg)
    original = load_pretrained_backbone(str(backbone)).state_dict()
    after_head = SpeechEncoder.from_pretrained(tmp_path / "run" / "checkpoints" / "step_000003")
    after_all = SpeechEncoder.from_pretrained(final)
    head_phase = after_head.backbone.state_dict()
    full_phase = after_all.backbone.state_dict()
    for name, value in original.items():
        assert torch.equal(head_phase[name], value), f"{name} moved during the head-only phase"
    cnn = [n for n in original if n.startswith(_CNN_PREFIX[kind])]
    rest = [n for n in original if not n.startswith(_CNN_PREFIX[kind])]
    assert cnn and rest
    for name in cnn:
        assert torch.equal(full_phase[name], original[name]), f"CNN parameter {name} moved"
    moved = [n for n in rest if not torch.equal(full_phase[n], original[n])]
    assert len(moved) >= 0.9 * len(rest), f"only {len(moved)} of {len(rest)} transformer tensors trained"
    init = SpeechEncoder.from_backbone(str(backbone), dim=16, space_id="x", teacher="t", seed=0)
    assert not torch.equal(
        after_head.projection.linear.weight, init.projection.linear.weight
    )  # the head trained
    phases = [m["phase"] for m in read_metrics(tmp_path / "run") if "phase" in m]
    assert phases == ["head"] * 3 + ["full"] * 3


# -- learning and resuming -----------------------------------------------------------------------------------
def test_a_few_steps_lower_the_loss(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    from miner.encoders.samu import SpeechEncoder
    from miner.train.loop import MODEL_CARD, train

    cfg = make_config(
        corpus,
        tiny_whisper_dir,
        spread_st_dir,
        tmp_path / "run",
        max_updates=10,
        head_only_updates=4,
        eval_every=5,
        dev_manifest=corpus,
    )
    final = train(cfg)
    dev = {m["step"]: m["dev_loss"] for m in read_metrics(tmp_path / "run") if "dev_loss" in m}
    assert sorted(dev) == [0, 5, 10]
    assert dev[10] < 0.5 * dev[0], dev
    model = SpeechEncoder.from_pretrained(final)
    assert model.dim == 16 and model.space_id == "st-spread-16" and model.config.teacher == str(spread_st_dir)
    card = (final / MODEL_CARD).read_text()
    for needle in ("st-spread-16", str(corpus), "| fr | 4 |", "Updates: 10 (4 head-only)", f"{dev[10]:.5f}"):
        assert needle in card
    assert (tmp_path / "run" / "train.log").read_text().count("loss") >= 10


def _resume_matches(corpus: Path, backbone: Path, teacher: Path, tmp_path: Path, **overrides: object) -> None:
    import shutil

    from miner.train.loop import train

    a, b = tmp_path / "a", tmp_path / "b"
    train(
        make_config(
            corpus, backbone, teacher, a, max_updates=8, head_only_updates=2, save_every=4, **overrides
        )
    )
    # b starts from a's step-4 checkpoint as if a run had died right after saving it.
    shutil.copytree(a / "checkpoints" / "step_000004", b / "checkpoints" / "step_000004")
    train(
        make_config(
            corpus, backbone, teacher, b, max_updates=8, head_only_updates=2, save_every=4, **overrides
        )
    )
    la = {m["step"]: m["loss"] for m in read_metrics(a) if "loss" in m}
    lb = {m["step"]: m["loss"] for m in read_metrics(b) if "loss" in m}
    assert sorted(lb) == [5, 6, 7, 8]
    assert [lb[s] for s in lb] == [la[s] for s in lb]  # bit-identical continuation
    assert len({la[s] for s in la}) > 4  # the losses do change from step to step


def test_resume_continues_exactly_whisper(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    _resume_matches(
        corpus, tiny_whisper_dir, spread_st_dir, tmp_path, mask_time_prob=0.2, contrastive_weight=0.5
    )


def test_resume_continues_exactly_wav2vec2(
    corpus: Path, tiny_wav2vec2_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    # wav2vec2 draws dropout, layer drop (torch RNG) and time masks (numpy RNG): all must be restored.
    _resume_matches(corpus, tiny_wav2vec2_dir, spread_st_dir, tmp_path, mask_time_prob=0.2)


def test_resume_refuses_a_changed_config(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    from miner.train.loop import train

    train(
        make_config(
            corpus,
            tiny_whisper_dir,
            spread_st_dir,
            tmp_path / "r",
            max_updates=2,
            head_only_updates=2,
            cache_features=True,
        )
    )
    with pytest.raises(ValueError, match="config changed.*peak_lr"):
        train(
            make_config(
                corpus,
                tiny_whisper_dir,
                spread_st_dir,
                tmp_path / "r",
                max_updates=2,
                head_only_updates=2,
                cache_features=True,
                peak_lr=1e-2,
            )
        )


# -- centred targets and cached features ---------------------------------------------------------------------
def test_centred_targets_pair_with_the_text_side(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    from miner.encoders.samu import SpeechEncoder
    from miner.encoders.text import load_text_encoder, load_text_encoder_for
    from miner.train.loop import train

    cfg = make_config(
        corpus,
        tiny_whisper_dir,
        spread_st_dir,
        tmp_path / "run",
        max_updates=4,
        head_only_updates=4,
        cache_features=True,
        center_targets=True,
    )
    model = SpeechEncoder.from_pretrained(train(cfg))
    assert len(list((tmp_path / "run" / "cache").glob("frames-*.json"))) == 1
    center = np.asarray(model.config.extra["text_center"], dtype=np.float32)
    assert center.shape == (16,) and model.space_id.startswith("st-spread-16-c")
    text_side = load_text_encoder_for(model)
    assert text_side.space_id == model.space_id
    base = load_text_encoder(str(spread_st_dir))
    texts = ["the cat sleeps", "der hund"]
    expected = base.encode(texts) - center
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(text_side.encode(texts), expected, atol=1e-6)
    # The mean of the training targets is the stored centre.
    teacher_rows = base.encode([line.split("\t")[2] for line in corpus.read_text().splitlines()[1:]])
    np.testing.assert_allclose(teacher_rows.mean(axis=0), center, atol=1e-5)


def test_cached_frames_train_like_the_backbone(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    from miner.train.loop import train

    # Whisper-tiny has no dropout; without masking, cached frames (float16) must give the same losses.
    kw = {"max_updates": 5, "head_only_updates": 5, "mask_time_prob": 0.0}
    train(make_config(corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "live", **kw))
    train(
        make_config(corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "cached", cache_features=True, **kw)
    )
    live = [m["loss"] for m in read_metrics(tmp_path / "live") if "loss" in m]
    cached = [m["loss"] for m in read_metrics(tmp_path / "cached") if "loss" in m]
    assert len(live) == 5
    np.testing.assert_allclose(cached, live, atol=2e-3)
    assert (tmp_path / "cached" / "checkpoints" / "step_000005" / "head.safetensors").is_file()  # head only


def test_adapter_head_trains_on_cached_frames_and_resumes_exactly(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from miner.encoders.samu import SpeechEncoder
    from miner.train.loop import MODEL_CARD, train

    kw = {
        "max_updates": 8,
        "head_only_updates": 8,
        "cache_features": True,
        "save_every": 4,
        "eval_every": 4,
        "dev_manifest": corpus,
        "adapter_layers": 1,
        "adapter_dim": 8,
        "adapter_heads": 2,
        "adapter_ffn": 16,
        "adapter_dropout": 0.2,  # dropout draws must resume exactly too
    }
    a, b = tmp_path / "a", tmp_path / "b"
    final = train(make_config(corpus, tiny_whisper_dir, spread_st_dir, a, **kw))
    shutil.copytree(a / "checkpoints" / "step_000004", b / "checkpoints" / "step_000004")
    train(make_config(corpus, tiny_whisper_dir, spread_st_dir, b, **kw))
    la = {m["step"]: m["loss"] for m in read_metrics(a) if "loss" in m}
    lb = {m["step"]: m["loss"] for m in read_metrics(b) if "loss" in m}
    assert sorted(lb) == [5, 6, 7, 8] and [lb[s] for s in lb] == [la[s] for s in lb]
    dev = [m for m in read_metrics(a) if "dev_loss" in m]
    assert [m["step"] for m in dev] == [0, 4, 8] and all(0.0 <= m["dev_r1"] <= 1.0 for m in dev)
    assert dev[-1]["dev_loss"] < dev[0]["dev_loss"]
    model = SpeechEncoder.from_pretrained(final)
    assert model.adapter is not None and model.config.adapter is not None
    assert (
        model.config.adapter["layers"] == 1
        and "1 trainable transformer layers" in (final / MODEL_CARD).read_text()
    )
