"""Weight-space ensembles of two SAMU heads (WiSE-FT, Wortsman et al. 2022).

A model fine-tuned on a new domain forgets some of the old one. When both models share a frozen backbone and
the new one was warm-started from the old one, the straight line between their head weights passes through
models that keep much of both: ``theta = (1 - w) * theta_old + w * theta_new``. One forward pass, no extra cost
at search time, no training: the weight ``w`` is chosen on dev data of both domains.

The two models' text centres (each model's targets were the teacher's vectors minus that mean) are
interpolated the same way, so the merged head and its paired text encoder form one space with its own id.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from miner.encoders.samu import SpeechEncoder
from miner.encoders.text import centred_space_id

log = logging.getLogger(__name__)

# Calibrations that belong to one model's scores: they do not carry over to a merged model.
_MODEL_SPECIFIC = (
    "dev_loss",
    "mine_threshold",
    "mine_threshold_dev",
    "fusion_weight",
    "fusion_weight_dev",
    "fusion_gate",
    "train_steps",
    "model_id",
)


def teacher_space_of(space_id: str) -> str:
    """The uncentred teacher space of a (possibly centred) space id: ``e5-small-384-c1a2b3c4d`` -> ``e5-small-384``."""
    base, sep, digest = space_id.rpartition("-c")
    return base if sep and len(digest) == 8 and all(c in "0123456789abcdef" for c in digest) else space_id


def merge_heads(old: SpeechEncoder, new: SpeechEncoder, weight: float) -> SpeechEncoder:
    """The model whose head is ``(1 - weight) * old + weight * new`` (and likewise the text centre).

    Args:
        old, new: SAMU models on the same frozen backbone (same ``backbone_source``), the same teacher and the
            same head architecture; ``new`` is usually ``old`` fine-tuned on another domain.
        weight: in [0, 1]; 0 gives ``old``'s head, 1 ``new``'s.

    Returns:
        A new ``SpeechEncoder`` on ``old``'s backbone object (not copied), in eval mode; ``config.extra`` keeps
        ``old``'s entries except per-model calibrations (mine threshold, fusion weight, dev loss), and records
        ``merged_from``.

    Raises:
        ValueError: a weight outside [0, 1], or two models that cannot be merged (the message says which part
            differs).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"merge weight must be in [0, 1], got {weight}")
    old, new = _same_top_layers(old, new)
    a, b = old.config, new.config
    for field in ("backbone_type", "backbone_source", "dim", "teacher", "adapter"):
        if getattr(a, field) != getattr(b, field):
            raise ValueError(
                f"cannot merge: the models differ in {field} ({getattr(a, field)!r} vs {getattr(b, field)!r}); "
                "merge two heads trained on the same backbone and teacher (e.g. a model and its warm-started "
                "fine-tune)"
            )
    if not a.backbone_source:
        raise ValueError(
            "cannot merge: the models carry their own (fine-tuned) backbones; merging needs heads on one frozen "
            "backbone (config backbone_source)"
        )
    if teacher_space_of(a.space_id) != teacher_space_of(b.space_id):
        raise ValueError(f"cannot merge: spaces of different teachers ({a.space_id} vs {b.space_id})")
    centres = [c.extra.get("text_center") for c in (a, b)]
    if (centres[0] is None) != (centres[1] is None):
        raise ValueError("cannot merge: one model was trained on centred targets and the other was not")

    state_a = {k: v for k, v in old.state_dict().items() if not k.startswith("backbone.")}
    state_b = {k: v for k, v in new.state_dict().items() if not k.startswith("backbone.")}
    if state_a.keys() != state_b.keys():
        raise ValueError(
            f"cannot merge: head parameters differ ({sorted(state_a.keys() ^ state_b.keys())[:4]})"
        )
    merged_state: dict[str, torch.Tensor] = {}
    for name, ta in state_a.items():
        tb = state_b[name]
        if ta.shape != tb.shape:
            raise ValueError(f"cannot merge: {name} has shape {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.is_floating_point():
            merged_state[name] = torch.lerp(ta.float(), tb.float().to(ta.device), weight).to(ta.dtype)
        else:  # integer buffers (counters): the old model's
            merged_state[name] = ta.clone()

    config = copy.deepcopy(a)
    for key in _MODEL_SPECIFIC:
        config.extra.pop(key, None)
    if centres[0] is not None:
        center = (1.0 - weight) * np.asarray(centres[0], np.float32) + weight * np.asarray(
            centres[1], np.float32
        )
        config.extra["text_center"] = [float(x) for x in center.astype(np.float32)]
        config.space_id = centred_space_id(teacher_space_of(a.space_id), center.astype(np.float32))
    elif a.space_id != b.space_id:
        raise ValueError(f"cannot merge: different spaces {a.space_id} and {b.space_id}")
    config.extra["merged_from"] = {
        "old": getattr(old, "source_dir", None),
        "new": getattr(new, "source_dir", None),
        "weight": float(weight),
        "method": "linear interpolation of head weights and text centres (WiSE-FT)",
    }
    # old.backbone has already lost its top layers to old.top: the merged head gets a copy of that module.
    model = SpeechEncoder(old.backbone, dataclasses.replace(config, top_layers=0))
    if config.top_layers:
        model.top = copy.deepcopy(old.top)
        model.config.top_layers = config.top_layers
    missing, unexpected = model.load_state_dict(merged_state, strict=False)
    if [
        k for k in missing if not k.startswith("backbone.")
    ] or unexpected:  # pragma: no cover - guarded above
        raise ValueError(f"merged head does not fit: missing {missing}, unexpected {unexpected}")
    model.to(old.device)
    model.eval()
    return model


def _same_top_layers(old: SpeechEncoder, new: SpeechEncoder) -> tuple[SpeechEncoder, SpeechEncoder]:
    """Both models with the same backbone layers in their heads: one that has none takes a copy with its
    pretrained top layers moved there (the same embeddings), so a warm start that unfroze them merges with its
    parent. The callers' models are not changed."""
    ka, kb = old.config.top_layers, new.config.top_layers
    if ka == kb:
        return old, new
    if ka and kb:
        raise ValueError(f"cannot merge: the models hold {ka} and {kb} backbone layers in their heads")
    if ka == 0:
        old = copy.deepcopy(old)
        old.move_top_layers_to_head(kb)
    else:
        new = copy.deepcopy(new)
        new.move_top_layers_to_head(ka)
    return old, new


def merge_model_folders(old_dir: Path, new_dir: Path, weight: float, out_dir: Path) -> Path:
    """Load two SAMU model folders, merge their heads (:func:`merge_heads`) and save the head-only result.

    Returns:
        ``out_dir``, holding ``config.json`` and ``head.safetensors`` (the backbone reloads from
        ``backbone_source``, as for the models merged).
    """
    old = SpeechEncoder.from_pretrained(old_dir)
    new = SpeechEncoder.from_pretrained(new_dir)
    merged = merge_heads(old, new, weight)
    merged.config.extra["merged_from"].update(old=str(old_dir), new=str(new_dir))  # as given: no local prefix
    out = merged.save_pretrained(out_dir, include_backbone=False)
    log.info(
        "merged %s and %s at weight %.3f -> %s (space %s)", old_dir, new_dir, weight, out, merged.space_id
    )
    return out
