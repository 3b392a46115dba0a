"""The speech student of a training run: a new SAMU model, a warm start, or a resumed checkpoint, made ready.

Ready means: the backbone frozen (the trainer unfreezes its transformer for the full phase; the CNN feature
encoder never trains), time masking configured, and, for a warm start, the model moved to this run's centred
teacher space after checking that it belongs to the same teacher and has the same head.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from miner.train.config import TrainConfig
from miner.train.objectives import configure_time_masking

if TYPE_CHECKING:
    from miner.encoders.samu import SpeechEncoder

log = logging.getLogger(__name__)


class Student(nn.Module):
    """What DDP wraps: the SAMU model, fed waveform inputs or cached backbone frames."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """``batch["inputs"]`` (backbone inputs) or ``batch["frames"]`` (B, T, H) + ``["mask"]`` -> z (B, dim)."""
        if "frames" in batch:
            return self.model.head(batch["frames"], batch["mask"])  # type: ignore[operator]
        return self.model(batch["inputs"])


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor (nested dicts too) on ``device``; other values unchanged."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = to_device(v, device)
        else:
            out[k] = v
    return out


def build_model(
    cfg: TrainConfig,
    resume_from: Path | None,
    *,
    teacher_space: str,
    space_id: str,
    dim: int,
    center: np.ndarray | None,
) -> SpeechEncoder:
    """The run's SAMU model on the CPU, backbone frozen.

    Args:
        cfg: the run's configuration (``backbone``, ``teacher``, ``init_from``, ``adapter``,
            ``unfreeze_top_layers``, time masking).
        resume_from: a checkpoint folder of this run, or None (then ``cfg.init_from`` or a new model).
        teacher_space: the teacher's own space id; space_id: this run's (centred) space id; dim: its width.
        center: float32 (dim,) mean of the training texts' teacher vectors, or None when not centred.

    Raises:
        ValueError: a checkpoint or ``init_from`` model of another space, dim or adapter.
    """
    from miner.encoders.samu import SpeechEncoder

    start_from = resume_from if resume_from is not None else cfg.init_from
    if start_from is not None:
        model = SpeechEncoder.from_pretrained(start_from)
        _check_start(model, start_from, resume_from is not None, teacher_space, space_id, dim)
        if resume_from is None:
            if model.config.adapter != cfg.adapter:
                raise ValueError(
                    f"init_from {start_from} has adapter {model.config.adapter}, this config asks for "
                    f"{cfg.adapter}: set the adapter_* keys to the model's"
                )
            if model.config.top_layers != cfg.unfreeze_top_layers:
                if model.config.top_layers:
                    raise ValueError(
                        f"init_from {start_from} holds {model.config.top_layers} backbone layers in its head, "
                        f"this config asks for {cfg.unfreeze_top_layers}: set unfreeze_top_layers = "
                        f"{model.config.top_layers}"
                    )
                model.move_top_layers_to_head(cfg.unfreeze_top_layers)
                log.info(
                    "init_from: the backbone's top %d layer(s) move into the head", cfg.unfreeze_top_layers
                )
            if model.space_id != space_id:
                # A warm start may move to another centre of the same teacher (e.g. more training texts).
                log.info("init_from: space %s -> %s (this run's centre)", model.space_id, space_id)
                model.config.space_id = space_id
                model.config.extra.pop("text_center", None)
                if center is not None:
                    model.config.extra["text_center"] = [float(x) for x in center]
            log.info("weights from %s (warm start: fresh optimiser and schedule)", start_from)
    else:
        source, teacher = cfg.backbone, cfg.teacher
        # Local folders as absolute paths: the saved model must find them again from anywhere.
        if not source.startswith("offline:") and Path(source).expanduser().is_dir():
            source = str(Path(source).expanduser().resolve())
        if Path(teacher).expanduser().is_dir():
            teacher = str(Path(teacher).expanduser().resolve())
        model = SpeechEncoder.from_backbone(
            source,
            dim=dim,
            space_id=space_id,
            teacher=teacher,
            seed=cfg.seed,
            adapter=cfg.adapter,
            top_layers=cfg.unfreeze_top_layers,
        )
        if center is not None:
            model.config.extra["text_center"] = [float(x) for x in center]
        model.config.extra["trained_with"] = "miner train"
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.backbone.freeze_feature_encoder()
    configure_time_masking(model, cfg.mask_time_prob, cfg.mask_time_length)
    for p in model.backbone.parameters():  # a masked_spec_embed created just now starts frozen too
        p.requires_grad_(False)
    if not model.backbone.padding_safe:
        log.warning("backbone normalises over time (group-norm CNN): padded batches change its features")
    return model


def _check_start(
    model: SpeechEncoder, start_from: Path | str, resuming: bool, teacher_space: str, space_id: str, dim: int
) -> None:
    """A resumed model must be in this run's space; a warm start only of the same teacher (any centre)."""
    same_teacher = model.space_id == teacher_space or model.space_id.startswith(teacher_space + "-c")
    if model.dim != dim or not (model.space_id == space_id or (not resuming and same_teacher)):
        fix = "use a new out_dir" if resuming else "init_from a model of this teacher"
        raise ValueError(
            f"model {start_from} is in space {model.space_id} (dim {model.dim}) but this "
            f"run's teacher gives {space_id} (dim {dim}): {fix}"
        )
