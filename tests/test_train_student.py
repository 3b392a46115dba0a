"""The run's student model (miner.train.student): new, warm-started or resumed, frozen where it must be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miner.train.student import Student, build_model, to_device
from tests._train_fixtures import make_config

SPACE = {"teacher_space": "st-spread-16", "space_id": "st-spread-16-cabc", "dim": 16}


def test_to_device_moves_nested_tensors_only() -> None:
    batch = {"inputs": {"x": torch.ones(2)}, "targets": torch.zeros(1), "n": 2, "name": "b"}
    out = to_device(batch, torch.device("meta"))
    assert out["inputs"]["x"].device.type == "meta" and out["targets"].device.type == "meta"
    assert out["n"] == 2 and out["name"] == "b"
    assert batch["targets"].device.type == "cpu"  # the input batch is left as it was


def test_new_model_is_frozen_but_its_head_and_records_its_centre(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "run")
    center = np.linspace(-1, 1, 16).astype(np.float32)
    model = build_model(cfg, None, center=center, **SPACE)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    assert model.space_id == SPACE["space_id"] and model.dim == 16
    assert model.config.extra["text_center"] == pytest.approx(center.tolist())
    assert model.config.teacher == str(spread_st_dir.resolve())
    frames, mask = torch.randn(2, 5, model.backbone.hidden_size), torch.ones(2, 5, dtype=torch.bool)
    assert Student(model)({"frames": frames, "mask": mask}).shape == (2, 16)


def test_warm_start_moves_centre_but_refuses_another_teacher(
    corpus: Path, tiny_whisper_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "run")
    first = build_model(cfg, None, center=None, **SPACE)
    first.save_pretrained(tmp_path / "first")
    warm = make_config(
        corpus, tiny_whisper_dir, spread_st_dir, tmp_path / "run2", init_from=tmp_path / "first"
    )
    moved = {**SPACE, "space_id": "st-spread-16-cdef"}
    model = build_model(warm, None, center=np.ones(16, np.float32), **moved)
    assert model.space_id == "st-spread-16-cdef" and model.config.extra["text_center"] == [1.0] * 16
    other = {"teacher_space": "labse-768", "space_id": "labse-768", "dim": 16}
    with pytest.raises(ValueError, match="init_from a model of this teacher"):
        build_model(warm, None, center=None, **other)
    # Resuming is stricter: a checkpoint must be in this very space, not just of the same teacher.
    with pytest.raises(ValueError, match="use a new out_dir"):
        build_model(cfg, tmp_path / "first", center=None, **moved)
