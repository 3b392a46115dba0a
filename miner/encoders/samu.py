"""SAMU-XLSR (Khurana et al. 2022, section II-B): backbone -> self-attention pooling -> tanh projection.

    C = backbone(x)                  (T, H) contextual frames
    v = softmax(C w)                 (T,)   attention over valid frames only
    e = sum_t v_t c_t                (H,)
    z = tanh(W e + b)                (D,)   D = the teacher's dim (768 for LaBSE)

Retrieval uses z / |z|. A model folder is self-describing: ``config.json`` (backbone type and config, dim,
space id, teacher) and safetensors weights, never pickles. A folder may hold only the head
(``head.safetensors``) plus ``backbone_source`` naming where the frozen backbone comes from; the head may also
hold the backbone's top transformer layers (``top_layers``), split off so they train on frames cached below them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from miner.audio import MIN_SAMPLES  # the shortest clip every backbone takes (25 ms)
from miner.encoders.backbones import Backbone, build_backbone, load_pretrained_backbone
from miner.encoders.batching import budget_batches
from miner.encoders.speech_spec import SpeechModel
from miner.encoders.speed import EncodeSpeed, Stopwatch
from miner.types import SAMPLE_RATE

log = logging.getLogger(__name__)

MODEL_TYPE = "samu-xlsr"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# 2: optional ``adapter`` (FrameAdapter); 3: optional ``top_layers`` (backbone layers in the head)
FORMAT_VERSION = 3
CONFIG_NAME = "config.json"
FULL_WEIGHTS = "model.safetensors"
HEAD_WEIGHTS = "head.safetensors"


class AttentionPooling(nn.Module):
    """Self-attention pooling: v = softmax(C w) over valid frames, e = sum_t v_t c_t."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames float (B, T, H), mask bool (B, T) -> pooled float (B, H)."""
        logits = self.score(frames).squeeze(-1).float()
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1).to(frames.dtype)
        return torch.einsum("bt,bth->bh", weights, frames)


class FrameAdapter(nn.Module):
    """Optional trainable transformer between a frozen backbone and the pooling.

    It stands in for fine-tuning the top of the backbone when the backbone must stay frozen (the offline demo
    trains on a CPU from cached frames): attention pooling alone is a weighted bag of frames and cannot compose
    phones into words; a few layers over the frames can. Frames are first averaged over ``stride`` steps
    (valid frames only), then projected to ``dim``. Whisper frames carry their positions already.
    """

    def __init__(
        self,
        hidden_size: int,
        layers: int,
        dim: int,
        heads: int,
        ffn: int,
        stride: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        if layers < 1 or stride < 1 or dim % heads:
            raise ValueError(f"bad adapter: layers={layers} stride={stride} dim={dim} heads={heads}")
        self.stride = stride
        self.input = nn.Sequential(nn.Linear(hidden_size, dim), nn.LayerNorm(dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, ffn, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames float (B, T, H), mask bool (B, T) -> frames float (B, ceil(T/stride), dim), mask (B, T')."""
        if self.stride > 1:
            b, t, h = frames.shape
            pad = -t % self.stride
            m = nn.functional.pad(mask, (0, pad)).reshape(b, -1, self.stride)
            x = nn.functional.pad(frames * mask[..., None].to(frames.dtype), (0, 0, 0, pad))
            x = x.reshape(b, -1, self.stride, h).sum(2)
            count = m.sum(-1)
            frames = x / count.clamp(min=1)[..., None].to(x.dtype)
            mask = count > 0
        x = self.layers(self.input(frames), src_key_padding_mask=~mask)
        return self.norm(x), mask


class Projection(nn.Module):
    """z = tanh(W e + b) into the teacher's space."""

    def __init__(self, hidden_size: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(pooled))


@dataclass
class SpeechEncoderConfig:
    """What ``config.json`` of a SAMU model folder holds."""

    backbone_type: str
    backbone_config: dict[str, Any]
    dim: int
    space_id: str
    teacher: str
    backbone_source: str | None = None
    adapter: dict[str, Any] | None = None  # FrameAdapter arguments (layers, dim, heads, ffn, stride), or none
    # the backbone's top transformer layers held (and trained) in the head, below the adapter
    top_layers: int = 0
    model_type: str = MODEL_TYPE
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeechEncoderConfig:
        if data.get("model_type") != MODEL_TYPE:
            raise ValueError(f"not a SAMU speech encoder config (model_type={data.get('model_type')!r})")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"model format version {data['format_version']} is newer than this code "
                f"({FORMAT_VERSION}): upgrade samu-miner"
            )
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


class SpeechEncoder(nn.Module):
    """SAMU-XLSR speech encoder: waveforms -> float32 (n, dim) L2-normalised embeddings."""

    kind = "samu"  # the speech model kinds of miner.encoders.speech_spec: samu, asr, fused

    def __init__(self, backbone: Backbone, config: SpeechEncoderConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.source_dir: str | None = None  # set by from_pretrained
        self.last_speed: EncodeSpeed | None = None  # of the last encode() call
        width = backbone.hidden_size
        # The backbone's top layers, split off into the head: they train on frames cached below them.
        self.top: nn.Module | None = backbone.split_top(config.top_layers) if config.top_layers else None
        self.adapter: FrameAdapter | None = None
        if config.adapter:
            self.adapter = FrameAdapter(backbone.hidden_size, **config.adapter)
            width = int(config.adapter["dim"])
        self.pooling = AttentionPooling(width)
        self.projection = Projection(width, config.dim)

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: str | Backbone,
        *,
        dim: int,
        space_id: str,
        teacher: str,
        seed: int = 0,
        adapter: dict[str, Any] | None = None,
        top_layers: int = 0,
    ) -> SpeechEncoder:
        """A new model: a pretrained backbone (folder, hub id, ``offline:whisper-base``) and a fresh head.

        ``adapter`` (FrameAdapter keyword arguments) adds trainable transformer layers before the pooling;
        ``top_layers`` moves the backbone's top transformer layers into the head (pretrained, trainable).
        """
        source = backbone if isinstance(backbone, str) else None
        bb = load_pretrained_backbone(backbone) if isinstance(backbone, str) else backbone
        config = SpeechEncoderConfig(
            backbone_type=bb.backbone_type,
            backbone_config=bb.config.to_dict(),
            dim=int(dim),
            space_id=space_id,
            teacher=teacher,
            backbone_source=source,
            adapter=dict(adapter) if adapter else None,
            top_layers=int(top_layers),
        )
        torch.manual_seed(seed)
        return cls(bb, config)

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike[str], device: str | None = None) -> SpeechEncoder:
        """Load a SAMU model folder (or a hub repo holding one; hub ids need network)."""
        folder = Path(path_or_id).expanduser()
        if not folder.is_dir():
            if not _HUB_ID.match(str(path_or_id)):
                raise FileNotFoundError(f"speech model folder {path_or_id} does not exist")
            from huggingface_hub import snapshot_download  # the online path, for users with a model hub

            try:
                folder = Path(snapshot_download(str(path_or_id)))
            except Exception as exc:  # offline, unknown repo, auth: one clear message
                raise FileNotFoundError(
                    f"speech model {path_or_id!r} is not a local folder and could not be fetched from the model hub "
                    f"({type(exc).__name__}); pass the path of a SAMU model folder"
                ) from exc
        cfg_file = folder / CONFIG_NAME
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file} is missing: {folder} is not a SAMU model folder")
        try:
            config = SpeechEncoderConfig.from_dict(json.loads(cfg_file.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{cfg_file} is not a valid SAMU config: {exc}") from exc
        from safetensors.torch import load_file

        if (folder / FULL_WEIGHTS).is_file():
            model = cls(build_backbone(config.backbone_type, config.backbone_config), config)
            model.load_state_dict(load_file(str(folder / FULL_WEIGHTS)), strict=True)
        elif (folder / HEAD_WEIGHTS).is_file():
            if not config.backbone_source:
                raise ValueError(f"{folder} holds only head weights but its config names no backbone_source")
            source = config.backbone_source
            if (
                not source.startswith("offline:")
                and not Path(source).is_absolute()
                and (folder / source).is_dir()
            ):
                source = str(folder / source)
            model = cls(load_pretrained_backbone(source), config)
            missing, unexpected = model.load_state_dict(load_file(str(folder / HEAD_WEIGHTS)), strict=False)
            head_missing = [k for k in missing if not k.startswith("backbone.")]
            if head_missing or unexpected:
                raise ValueError(
                    f"head weights in {folder} do not fit: missing {head_missing}, unexpected {unexpected}"
                )
        else:
            raise FileNotFoundError(f"no {FULL_WEIGHTS} or {HEAD_WEIGHTS} in {folder}")
        model.eval()
        model.source_dir = str(folder.resolve())  # where it came from: paired text encoders reload by it
        if device:
            model.to(device)
        return model

    def save_pretrained(self, out_dir: str | os.PathLike[str], include_backbone: bool = True) -> Path:
        """Write ``config.json`` and safetensors weights (the whole model, or the head only) atomically."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not include_backbone and not self.config.backbone_source:
            raise ValueError("save_pretrained(include_backbone=False) needs config.backbone_source to reload")
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        if not include_backbone:
            state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        save_file(
            state, str(tmp / (FULL_WEIGHTS if include_backbone else HEAD_WEIGHTS)), metadata={"format": "pt"}
        )
        config = asdict(self.config)
        # The oldest format that reads this model: a model without top layers stays readable by older code.
        config["format_version"] = FORMAT_VERSION if self.config.top_layers else 2
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True))
        tmp.chmod(0o755)  # mkdtemp makes the folder private; a model folder is meant to be shared
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():  # replace the old folder only once the new one is complete
            old = out.with_name(f".{out.name}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        return out

    def move_top_layers_to_head(self, layers: int) -> None:
        """Split the backbone's top ``layers`` transformer layers off into the head (a model that has none there
        yet): the embeddings stay the same; the layers then train with the head and save with it."""
        if self.top is not None:
            raise ValueError(f"this model already holds {self.config.top_layers} backbone layers in its head")
        self.top = self.backbone.split_top(layers).to(self.device)
        self.config.top_layers = int(layers)

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def space_id(self) -> str:
        return self.config.space_id

    @property
    def model_id(self) -> str:
        return str(
            self.config.extra.get("model_id", f"samu-{self.config.backbone_type}-{self.config.space_id}")
        )

    @property
    def fingerprint(self) -> str:
        """12 hex digits over the head's weights and the backbone source: tells caches of two models apart.

        The backbone's own weights are not hashed (hundreds of MB); a fine-tuned backbone is saved with the
        model (``backbone_source`` is then None) and its head differs too.
        """
        h = hashlib.sha1(str(self.config.backbone_source).encode())
        for name, t in sorted(self.state_dict().items()):
            if not name.startswith("backbone."):
                h.update(name.encode())
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:12]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- forward ---------------------------------------------------------------------------------------------
    def head(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[Top layers +] [adapter +] pooling + projection: frames (B, T, H), mask bool (B, T) -> z float (B, dim),
        not normalised."""
        if self.top is not None:
            frames, mask = self.top(frames, mask)
        if self.adapter is not None:
            frames, mask = self.adapter(frames, mask)
        return self.projection(self.pooling(frames, mask))

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything but the backbone: what trains while the backbone is frozen."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model inputs from ``backbone.prepare`` -> z float (B, dim) (tanh outputs, not normalised)."""
        frames, mask = self.backbone(inputs)
        return self.head(frames, mask)

    def encode(
        self,
        waveforms: Sequence[np.ndarray],
        batch_size: int = 8,
        progress: bool = False,
        *,
        batch_seconds: float | None = None,
        prefetch: bool | None = None,
    ) -> np.ndarray:
        """Embed 16 kHz mono float32 waveforms.

        Args:
            waveforms: n 1-D float32 arrays at 16 kHz (``miner.audio.load_audio`` gives these).
            batch_size: most clips per forward pass; clips are sorted by length so a batch holds similar lengths.
            progress: show a progress bar.
            batch_seconds: also end a batch before its padded audio (clips x longest) passes this many seconds,
                so each pass does about the same work whatever the clip lengths (``None``: clip count only).
            prefetch: prepare the next batch's inputs (normalise, pad, log-mel) on a CPU thread while this one
                runs, in pinned memory (``None``: on CUDA only, where the GPU would otherwise wait on the host).

        Returns:
            float32 (n, dim), rows L2-normalised, in input order. On CUDA: the weights' dtype when they were cast
            (:meth:`for_inference`), else bf16/fp16 autocast; fp32 on the CPU. ``last_speed`` then holds the
            call's audio-seconds per second.
        """
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            raise TypeError("encode() takes a list of waveforms; wrap a single clip in a list")
        for i, w in enumerate(waveforms):
            if np.asarray(w).ndim != 1 or len(w) == 0:
                raise ValueError(f"waveform #{i} must be a non-empty 1-D array, got shape {np.shape(w)}")
            if len(w) < MIN_SAMPLES:
                raise ValueError(
                    f"waveform #{i} has {len(w)} samples ({1000 * len(w) / SAMPLE_RATE:.1f} ms); the speech "
                    f"encoder needs at least {MIN_SAMPLES} ({1000 * MIN_SAMPLES / SAMPLE_RATE:.0f} ms at 16 kHz): "
                    "drop clips this short or pad them with silence"
                )
        if not self.backbone.padding_safe and batch_size > 1:
            log.warning("backbone normalises over time (group norm): encoding one clip at a time")
            batch_size, batch_seconds = 1, None
        watch = Stopwatch(waveforms)
        was_training = self.training
        self.eval()
        device = self.device
        on_cuda = device.type == "cuda"
        weight_dtype = next(self.parameters()).dtype
        autocast = (
            torch.autocast(device_type="cuda", dtype=_cuda_dtype())
            if on_cuda and weight_dtype == torch.float32
            else contextlib.nullcontext()
        )
        budget = None if batch_seconds is None else max(1, int(batch_seconds * SAMPLE_RATE))
        batches = list(budget_batches([len(w) for w in waveforms], batch_size, budget))
        if prefetch is None:
            prefetch = on_cuda

        def prepared(idx: np.ndarray) -> dict[str, torch.Tensor]:
            inputs = self.backbone.prepare([waveforms[i] for i in idx])
            return {k: v.pin_memory() for k, v in inputs.items()} if on_cuda else inputs

        outs: list[torch.Tensor] = []
        with torch.inference_mode(), contextlib.ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(1, "samu-prepare")) if prefetch else None
            ahead = pool.submit(prepared, batches[0]) if pool and batches else None
            for j, idx in enumerate(tqdm(batches, desc="embed speech", unit="batch", disable=not progress)):
                if pool is not None and ahead is not None:
                    cpu_inputs = ahead.result()
                    ahead = pool.submit(prepared, batches[j + 1]) if j + 1 < len(batches) else None
                else:
                    cpu_inputs = prepared(idx)
                inputs = {
                    k: v.to(device, weight_dtype if v.is_floating_point() else None, non_blocking=on_cuda)
                    for k, v in cpu_inputs.items()
                }
                with autocast:
                    z = self(inputs)
                # stays on the device: one copy back at the end, not a synchronising copy per batch
                outs.append(torch.nn.functional.normalize(z.float(), dim=-1))
        out = np.zeros((len(waveforms), self.dim), dtype=np.float32)
        if outs:
            out[np.concatenate(batches)] = torch.cat(outs).cpu().numpy()
        self.train(was_training)
        self.last_speed = watch.done(log, "SAMU embedded")
        return out

    def for_inference(self, dtype: torch.dtype | None = None) -> SpeechEncoder:
        """Cast the weights for inference only (no gradients): on CUDA to bf16 (fp16 where the GPU lacks bf16)
        unless ``dtype`` says otherwise; on the CPU only when ``dtype`` is given. Returns ``self``.

        Casting once beats autocast, which converts every weight again at each forward pass. Not for a model
        that will be trained: its master weights must stay fp32."""
        if dtype is None:
            if self.device.type != "cuda":
                return self
            dtype = _cuda_dtype()
        self.eval().requires_grad_(False)
        return self.to(dtype)


def _cuda_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_speech_encoder(path_or_id: str | None = None, device: str | None = None) -> SpeechModel:
    """Load the speech encoder named by ``path_or_id``, ``$MINER_SPEECH_MODEL`` or the offline demo model.

    The name is a speech model string (:mod:`miner.encoders.speech_spec`)::

        PATH | HUB_ID | samu:PATH          a SAMU model (SpeechEncoder); today's behaviour
        asr[,lang=xx][:PATH]               ASR cascade: Whisper transcript -> PATH's paired text encoder
        fused[,w=W][,lang=xx][:PATH]       normalize(W * samu + (1 - W) * asr), W from the string, else
                                           PATH's config.json extra.fusion_weight, else 0.5

    PATH defaults to the shipped demo model for every kind. All kinds share ``encode(waveforms, batch_size,
    progress) -> float32 (n, dim)`` (L2-normalised), ``dim``, ``space_id``, ``model_id``, ``fingerprint``
    (different per kind and weight: caches never mix them), ``kind``, ``device`` and ``last_speed``.

    Args:
        path_or_id: the speech model string; None for ``$MINER_SPEECH_MODEL``, else the demo SAMU model.
        device: torch device of the SAMU model (``None``: CUDA when available); Whisper runs on CPU.

    Raises:
        SpeechSpecError: an unknown kind or option (the message lists the accepted forms).
        FileNotFoundError: the model folder does not exist.
    """
    from miner.encoders.speech_spec import FORMS, load_speech_kind, parse_speech_spec

    name = path_or_id or os.environ.get("MINER_SPEECH_MODEL")
    spec = parse_speech_spec(name) if name else None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec is not None and spec.kind != "samu":
        return load_speech_kind(spec, device=device)
    folder = spec.model if spec is not None else None
    if not folder:
        from miner.demo import demo_model_dir

        folder = str(demo_model_dir())
    elif not Path(folder).expanduser().exists() and not _HUB_ID.match(folder):
        raise FileNotFoundError(
            f"speech model folder {folder!r} does not exist and is not a hub id (owner/name); "
            f"accepted forms: {FORMS}"
        )
    # inference only from here on: bf16 weights on CUDA (a no-op on the CPU)
    return SpeechEncoder.from_pretrained(folder, device=device).for_inference()
