"""`miner merge`: weight-space interpolation of two SAMU heads on one frozen backbone (miner.train.merge)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miner.encoders.samu import SpeechEncoder
from miner.encoders.text import centred_space_id
from miner.train.merge import merge_heads, merge_model_folders, teacher_space_of

ADAPTER = {"layers": 1, "dim": 16, "heads": 2, "ffn": 32, "stride": 2, "dropout": 0.0}


def _model(whisper_dir: Path, seed: int, center_value: float | None, **kw: object) -> SpeechEncoder:
    model = SpeechEncoder.from_backbone(
        str(whisper_dir),
        dim=8,
        space_id="t-8",
        teacher="t",
        seed=seed,
        adapter=kw.get("adapter", ADAPTER),  # type: ignore[arg-type]
    )
    if center_value is not None:
        center = np.full(8, center_value, np.float32)
        model.config.extra["text_center"] = center.tolist()
        model.config.space_id = centred_space_id("t-8", center)
    model.config.extra.update(
        mine_threshold=1.07, fusion_weight=0.7, fusion_gate={"threshold": -1.0, "weight": 0.5}, note="kept"
    )
    return model.eval()


def _head(model: SpeechEncoder) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def test_teacher_space_strips_only_a_centre_suffix() -> None:
    assert teacher_space_of("e5-small-384-c02ab7f26") == "e5-small-384"
    assert teacher_space_of("e5-small-384") == "e5-small-384"
    assert teacher_space_of("labse-c768") == "labse-c768"  # not 8 hex digits: not a centre


def test_merge_interpolates_every_head_tensor_and_the_centre(tiny_whisper_dir: Path) -> None:
    old, new = _model(tiny_whisper_dir, 0, 0.1), _model(tiny_whisper_dir, 1, 0.3)
    merged = merge_heads(old, new, 0.25)
    a, b, m = _head(old), _head(new), _head(merged)
    assert m.keys() == a.keys() and len(m) > 4
    for name in m:
        torch.testing.assert_close(m[name], 0.75 * a[name] + 0.25 * b[name])
    center = np.asarray(merged.config.extra["text_center"], np.float32)
    np.testing.assert_allclose(center, np.full(8, 0.15, np.float32), rtol=1e-6)
    assert merged.space_id == centred_space_id("t-8", center) != old.space_id
    # per-model calibrations are dropped, the rest is kept and the merge is recorded
    assert not {"mine_threshold", "fusion_weight", "fusion_gate"} & merged.config.extra.keys()
    assert merged.config.extra["note"] == "kept"
    assert merged.config.extra["merged_from"]["weight"] == 0.25


def test_merge_endpoints_give_each_model_back(tiny_whisper_dir: Path) -> None:
    old, new = _model(tiny_whisper_dir, 0, 0.1), _model(tiny_whisper_dir, 1, 0.3)
    wave = [np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1]
    for weight, same_as in ((0.0, old), (1.0, new)):
        merged = merge_heads(old, new, weight)
        np.testing.assert_allclose(merged.encode(wave), same_as.encode(wave), atol=1e-6)
        assert merged.space_id == same_as.space_id


def test_merged_folder_reloads_through_the_real_loader(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    old, new = _model(tiny_whisper_dir, 0, 0.1), _model(tiny_whisper_dir, 1, 0.3)
    old_dir = old.save_pretrained(tmp_path / "old", include_backbone=False)
    new_dir = new.save_pretrained(tmp_path / "new", include_backbone=False)
    out = merge_model_folders(old_dir, new_dir, 0.5, tmp_path / "merged")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "head.safetensors"]
    reloaded = SpeechEncoder.from_pretrained(out)
    in_memory = merge_heads(old, new, 0.5)
    wave = [np.random.default_rng(1).standard_normal(12000).astype(np.float32) * 0.1]
    np.testing.assert_allclose(reloaded.encode(wave), in_memory.encode(wave), atol=1e-6)
    assert reloaded.config.extra["merged_from"]["old"] == str(old_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"adapter": None}, "differ in adapter"),
        ({"center": None}, "centred targets"),
    ],
)
def test_merge_refuses_models_that_do_not_share_a_head(
    tiny_whisper_dir: Path, change: dict[str, object], message: str
) -> None:
    old = _model(tiny_whisper_dir, 0, 0.1)
    other = _model(
        tiny_whisper_dir,
        1,
        None if "center" in change else 0.3,
        adapter=change.get("adapter", ADAPTER),
    )
    with pytest.raises(ValueError, match=message):
        merge_heads(old, other, 0.5)


def test_merge_refuses_a_weight_outside_0_1(tiny_whisper_dir: Path) -> None:
    old = _model(tiny_whisper_dir, 0, 0.1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        merge_heads(old, old, 1.5)


def test_merge_cli_names_a_missing_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from miner.cli import app

    result = CliRunner().invoke(
        app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code != 0
    assert "not a SAMU model folder" in str(result.exception)
