"""What the student is trained against: the distillation loss and SpecAugment-style time masking.

loss = mean_i (1 - cos(z_i, teacher(t_i)))  [+ w * InfoNCE over in-batch targets, or over a bank of targets]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from miner.encoders.samu import SpeechEncoder

__all__ = ["distill_loss", "configure_time_masking", "MASK_FRAME_SECONDS"]


def distill_loss(
    z: torch.Tensor,
    targets: torch.Tensor,
    text_ids: torch.Tensor | None = None,
    contrastive_weight: float = 0.0,
    temperature: float = 0.05,
    bank: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine distance to the teacher, plus an optional InfoNCE term.

    Args:
        z: student outputs float (B, D) (not normalised).
        targets: teacher embeddings float (B, D).
        text_ids: int64 (B,) distinct-text id of each row: rows sharing a transcript (up-sampled repeats) are
            not treated as negatives of each other.
        contrastive_weight: weight of the InfoNCE term (0: the paper's pure cosine loss).
        temperature: InfoNCE temperature.
        bank: float (K, D) unit rows, or None. Given, the InfoNCE candidates are all K bank rows (a full
            softmax over the training texts) instead of the batch's targets, and ``text_ids`` are row indices
            into the bank (``bank[text_ids[i]]`` is row i's target).

    Returns:
        (total loss, mean cosine distance), float32 scalars.
    """
    z = z.float()
    targets = targets.float()
    cos_loss = (1.0 - F.cosine_similarity(z, targets, dim=-1)).mean()
    if contrastive_weight <= 0:
        return cos_loss, cos_loss
    if bank is not None:
        if text_ids is None:
            raise ValueError("a bank of negatives needs text_ids: the bank row of each target")
        logits = F.normalize(z, dim=-1) @ bank.float().T / temperature
        return cos_loss + contrastive_weight * F.cross_entropy(logits, text_ids), cos_loss
    if len(z) < 2:
        return cos_loss, cos_loss
    logits = F.normalize(z, dim=-1) @ F.normalize(targets, dim=-1).T / temperature
    if text_ids is not None:
        same = text_ids[:, None] == text_ids[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    nce = F.cross_entropy(logits, torch.arange(len(z), device=z.device))
    return cos_loss + contrastive_weight * nce, cos_loss


def configure_time_masking(model: SpeechEncoder, prob: float, length: int) -> None:
    """SpecAugment-style time masking of the backbone's features while training.

    wav2vec2 masks its CNN features (after the feature projection) with the learned ``masked_spec_embed``,
    created here when the checkpoint had masking off; Whisper zeroes spans of log-mel frames. The SAMU
    config's ``backbone_config`` is refreshed so that a saved model folder reloads with the same modules.
    """
    from miner.encoders.backbones import Wav2Vec2Backbone

    backbone = model.backbone
    if isinstance(backbone, Wav2Vec2Backbone):
        inner: Any = backbone.model
        cfg = inner.config
        cfg.mask_time_prob = float(prob)
        cfg.mask_time_length = int(length)
        if prob > 0:
            cfg.apply_spec_augment = True
            if not hasattr(inner, "masked_spec_embed"):
                inner.masked_spec_embed = nn.Parameter(torch.empty(cfg.hidden_size).uniform_())
        model.config.backbone_config = cfg.to_dict()
    else:  # Whisper: the backbone masks log-mel frames itself
        backbone.mask_time_prob = float(prob)  # type: ignore[assignment]
        backbone.mask_time_length = int(length)  # type: ignore[assignment]


# The longest frame hop where masking applies (wav2vec2: 20 ms CNN frames; Whisper: 10 ms log-mel frames).
# A batch whose longest clip holds fewer frames than one mask span makes transformers' span sampler fail.
MASK_FRAME_SECONDS = 0.02
