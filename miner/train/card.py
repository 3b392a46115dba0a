"""The model card written beside a trained model (``MODEL_CARD.md``): data, recipe, results, config."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from miner.train.config import TrainConfig
from miner.train.data import Utterance
from miner.train.sampling import language_probs

if TYPE_CHECKING:
    from miner.encoders.samu import SpeechEncoder

__all__ = ["MODEL_CARD", "model_card"]

MODEL_CARD = "MODEL_CARD.md"


def model_card(
    cfg: TrainConfig,
    model: SpeechEncoder,
    *,
    train_utts: Sequence[Utterance],
    centred: bool,
    teacher_space: str,
    step: int,
    seen_seconds: float,
    seen_utts: float,
    final_dev: float | None,
) -> str:
    """Markdown: space, recipe, final dev loss, audio seen, per-language data table and the full config."""
    by_lang: dict[str, list[float]] = {}
    for u in train_utts:
        by_lang.setdefault(u.lang, []).append(u.duration)
    q = language_probs({k: len(v) for k, v in by_lang.items()}, cfg.alpha)
    rows = "\n".join(
        f"| {lang} | {len(d)} | {sum(d) / 3600:.3f} | {q[lang]:.4f} |" for lang, d in sorted(by_lang.items())
    )
    hours = sum(u.duration for u in train_utts) / 3600
    dev = f"{final_dev:.5f}" if final_dev is not None else "n/a (no dev_manifest)"
    center = (
        "yes: targets are teacher vectors minus their mean over the training texts (stored in "
        "config.json extra.text_center); use `load_text_encoder_for(model)` on the text side"
        if centred
        else "no"
    )
    adapter = model.config.adapter
    head = "self-attention pooling + tanh projection (the paper's)"
    if adapter:
        head = (
            f"{adapter['layers']} trainable transformer layers (width {adapter['dim']}, {adapter['heads']} heads, "
            f"frames averaged over {adapter['stride']}) before the pooling + tanh projection"
        )
    if model.config.top_layers:
        head = f"the backbone's top {model.config.top_layers} layer(s), trained, then " + head
    loss = "1 - cos(z, teacher(t))"
    if cfg.contrastive_weight:
        loss += f" + {cfg.contrastive_weight:g} x InfoNCE (T={cfg.temperature:g})"
    if cfg.translation_weight:
        loss += f"; T3: + {cfg.translation_weight:g} x the same against teacher(English source of t)"
        if cfg.translation_negatives == "all":
            loss += ", its InfoNCE over every distinct English source of the training set"
    start = (
        f"weights of `{shown_path(cfg.init_from)}` (warm start; earlier stages are in its own card)"
        if cfg.init_from is not None
        else "a fresh head"
    )
    settings = {
        k: shown_path(getattr(cfg, k)) if isinstance(getattr(cfg, k), Path) else v
        for k, v in cfg.to_dict().items()
    }
    config_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items() if v is not None)
    return f"""# SAMU speech encoder ({model.config.backbone_type} backbone)

Distilled from the frozen text encoder **{cfg.teacher}** (paper: Khurana et al. 2022, SAMU-XLSR, section II-D).

- Embedding space: `{model.space_id}` (dim {model.dim}); teacher space `{teacher_space}`
- Centred targets: {center}
- Backbone: `{cfg.backbone}`
- Head: {head}
- Updates: {step} ({min(cfg.head_only_updates, step)} head-only), peak LR {cfg.peak_lr:g}, tri-stage \
{cfg.warmup_frac:g}/{cfg.hold_frac:g}/{cfg.decay_frac:g} decaying to {cfg.final_lr_scale:g} x peak
- Loss: {loss}
- Started from: {start}
- Final dev loss (mean cosine distance): {dev}
- Audio seen (this run): {seen_seconds / 3600:.3f} h, {int(seen_utts)} utterances

## Training data

Manifest `{shown_path(cfg.train_manifest)}`: {len(train_utts)} utterances, {hours:.3f} h.
Language re-balancing alpha = {cfg.alpha:g} (Eq. 3).

| lang | utterances | hours | sampling prob. |
|---|---|---|---|
{rows}

## Config

```toml
{config_lines}
```
"""


def shown_path(path: str | os.PathLike[str] | None) -> str:
    """``path`` as a card shows it: relative to the current directory when inside it (a config file resolves
    its paths to absolute ones, which would leak this machine's layout), else normalised."""
    if path is None:
        return ""
    normal = os.path.normpath(os.path.abspath(path))
    relative = os.path.relpath(normal)
    return normal if relative.startswith("..") else relative
