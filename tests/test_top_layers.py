"""The backbone's top layers moved into the head (``top_layers``): same embeddings, trained on cached frames,
saved and merged with the head (miner.encoders.backbones.WhisperTopLayers, #16 item 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miner.encoders.samu import SpeechEncoder
from miner.train.merge import merge_heads
from tests._train_fixtures import make_config, read_metrics

ADAPTER = {"layers": 1, "dim": 16, "heads": 2, "ffn": 32, "stride": 2, "dropout": 0.0}


def _model(whisper_dir: Path, top_layers: int = 0, seed: int = 0) -> SpeechEncoder:
    return SpeechEncoder.from_backbone(
        str(whisper_dir),
        dim=8,
        space_id="t-8",
        teacher="t",
        seed=seed,
        adapter=ADAPTER,
        top_layers=top_layers,
    ).eval()


def _clips(seconds: list[float]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def test_moving_top_layers_keeps_the_embeddings_even_past_30_s(tiny_whisper_dir: Path) -> None:
    whole = _model(tiny_whisper_dir)
    waves = _clips([1.5, 4.0, 31.0])  # the last one spans two 30 s windows
    before = whole.encode(waves, batch_size=3)
    backbone_layers = len(whole.backbone.encoder.layers)
    whole.move_top_layers_to_head(1)
    assert len(whole.backbone.encoder.layers) == backbone_layers - 1 and whole.config.top_layers == 1
    assert any(k.startswith("top.layers.0.") for k in whole.state_dict())
    np.testing.assert_allclose(whole.encode(waves, batch_size=3), before, atol=1e-5)
    with pytest.raises(ValueError, match="already holds 1"):
        whole.move_top_layers_to_head(1)


def test_top_layers_on_cached_frames_match_the_whole_backbone(tiny_whisper_dir: Path) -> None:
    """The frame cache keeps valid frames only, in time order: a 31 s clip's two windows must still be cut where
    the backbone cut them, whatever the other clips of the batch."""
    import copy

    whole = _model(tiny_whisper_dir)
    split = copy.deepcopy(whole)
    split.move_top_layers_to_head(1)
    inputs = whole.backbone.prepare(_clips([31.0, 2.0, 45.5]))
    with torch.no_grad():
        top_frames, top_mask = whole.backbone(inputs)
        low_frames, low_mask = split.backbone(inputs)
        rows = [low_frames[i][low_mask[i]] for i in range(3)]  # as the cache stores them
        frames = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones(len(r), dtype=torch.bool) for r in rows], batch_first=True
        )
        out, out_mask = split.top(frames, mask)  # type: ignore[misc]
    assert torch.equal(out_mask, mask)
    for i, r in enumerate(rows):
        torch.testing.assert_close(out[i, : len(r)], top_frames[i][top_mask[i]], atol=1e-5, rtol=1e-5)


def test_top_layers_save_with_the_head_and_reload(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    model = _model(tiny_whisper_dir, top_layers=1)
    with torch.no_grad():  # as if trained: the head's copy now differs from the pretrained layer
        for p in model.top.parameters():  # type: ignore[union-attr]
            p.add_(0.05)
    out = model.save_pretrained(tmp_path / "m", include_backbone=False)
    back = SpeechEncoder.from_pretrained(out)
    assert back.config.top_layers == 1 and back.fingerprint == model.fingerprint
    waves = _clips([2.0, 3.0])
    np.testing.assert_allclose(back.encode(waves), model.encode(waves), atol=1e-6)
    assert back.fingerprint != _model(tiny_whisper_dir, top_layers=1).fingerprint  # trained top is hashed
    full = SpeechEncoder.from_pretrained(model.save_pretrained(tmp_path / "full"))
    np.testing.assert_allclose(full.encode(waves), model.encode(waves), atol=1e-6)


def test_too_many_top_layers_is_a_clear_error(tiny_whisper_dir: Path) -> None:
    with pytest.raises(ValueError, match="cannot move 3 top layers of a 2-layer"):
        _model(tiny_whisper_dir, top_layers=3)


def test_wav2vec2_backbone_says_top_layers_are_whisper_only(tiny_wav2vec2_dir: Path) -> None:
    with pytest.raises(ValueError, match="Whisper backbones only"):
        SpeechEncoder.from_backbone(str(tiny_wav2vec2_dir), dim=8, space_id="t-8", teacher="t", top_layers=1)


def test_merge_gives_a_parent_without_top_layers_its_pretrained_ones(tiny_whisper_dir: Path) -> None:
    old = _model(tiny_whisper_dir, seed=1)
    new = _model(tiny_whisper_dir, seed=2)
    new.move_top_layers_to_head(1)
    with torch.no_grad():
        for p in new.top.parameters():  # type: ignore[union-attr]
            p.add_(0.1)
    old_fingerprint = old.fingerprint
    waves = _clips([2.0, 3.5])
    at_old, at_new = merge_heads(old, new, 0.0), merge_heads(old, new, 1.0)
    assert old.top is None and old.fingerprint == old_fingerprint  # the caller's model is not changed
    assert at_old.config.top_layers == at_new.config.top_layers == 1
    np.testing.assert_allclose(at_old.encode(waves), old.encode(waves), atol=1e-5)
    np.testing.assert_allclose(at_new.encode(waves), new.encode(waves), atol=1e-5)
    half = merge_heads(old, new, 0.5)
    for name, t in half.top.state_dict().items():  # type: ignore[union-attr]
        pretrained = old.backbone.encoder.layers[-1].state_dict() if name.startswith("layers.0.") else None
        if pretrained is not None:
            expected = 0.5 * pretrained[name.removeprefix("layers.0.")] + 0.5 * new.top.state_dict()[name]  # type: ignore[union-attr]
            torch.testing.assert_close(t, expected)


def test_top_layer_trains_on_frames_cached_below_it_and_resumes(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from miner.train.loop import MODEL_CARD, train

    kw = {
        "max_updates": 6,
        "head_only_updates": 6,
        "cache_features": True,
        "save_every": 3,
        "unfreeze_top_layers": 1,
        "mask_time_prob": 0.0,
    }
    a, b = tmp_path / "a", tmp_path / "b"
    final = train(make_config(corpus, tiny_whisper_dir, spread_st_dir, a, **kw))
    shutil.copytree(a / "checkpoints" / "step_000003", b / "checkpoints" / "step_000003")
    train(make_config(corpus, tiny_whisper_dir, spread_st_dir, b, **kw))
    la = {m["step"]: m["loss"] for m in read_metrics(a) if "loss" in m}
    lb = {m["step"]: m["loss"] for m in read_metrics(b) if "loss" in m}
    assert sorted(lb) == [4, 5, 6] and [lb[s] for s in lb] == [la[s] for s in lb]
    trained = SpeechEncoder.from_pretrained(final)
    pretrained = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=trained.dim, space_id=trained.space_id, teacher="t", top_layers=1
    )
    moved = [
        not torch.equal(t, pretrained.top.state_dict()[k])  # type: ignore[union-attr]
        for k, t in trained.top.state_dict().items()  # type: ignore[union-attr]
    ]
    assert trained.config.top_layers == 1 and any(moved)  # the layer trained, and it saved with the head
    assert "top 1 layer(s), trained" in (final / MODEL_CARD).read_text()
    # The frames were cached below the moved layer: a cache of another backbone (fingerprint) than the whole one.
    whole = make_config(
        corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "whole", **{**kw, "unfreeze_top_layers": 0}
    )
    train(whole)
    caches = {p.name for p in (a / "cache").glob("*.json")} | {
        p.name for p in (tmp_path / "whole" / "cache").glob("*.json")
    }
    assert len(caches) == 2


def test_warm_start_moves_the_pretrained_top_layer_into_the_head(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    from miner.train.student import build_model

    space = {"teacher_space": "st-spread-16", "space_id": "st-spread-16-cabc", "dim": 16}
    first = build_model(
        make_config(corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "r"), None, center=None, **space
    )
    first.save_pretrained(tmp_path / "first")
    warm = make_config(
        corpus,
        tiny_whisper_dir,
        spread_st_dir,
        tmp_path / "r2",
        init_from=tmp_path / "first",
        unfreeze_top_layers=1,
    )
    model = build_model(warm, None, center=None, **space)
    assert model.config.top_layers == 1
    assert all(p.requires_grad for p in model.top.parameters())  # type: ignore[union-attr]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.save_pretrained(tmp_path / "second")
    back = make_config(
        corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "r3", init_from=tmp_path / "second"
    )
    with pytest.raises(ValueError, match="set unfreeze_top_layers = 1"):
        build_model(back, None, center=None, **space)
