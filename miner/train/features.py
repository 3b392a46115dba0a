"""Backbone frames computed once and kept on disk, for runs whose backbone stays frozen throughout.

Training only pooling + projection on cached frames skips the backbone's forward pass at every step (the
whole cost on CPU). Frames are computed in eval mode (no dropout, no time masking) and stored as float16,
valid frames only, in time order, so a batch of cached frames is what the backbone gives for those clips.

Layout in the cache folder (``<key>`` hashes the backbone weights and the utterance list):
``frames-<key>.bin`` raw float16 (total_frames, hidden), ``frames-<key>.index.npy`` int64 (n, 2) of
(first frame, frame count) per utterance, and
``frames-<key>.json`` (written last: its presence marks a complete cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from miner.train.data import Utterance, bucket_batches, load_utterance_audio

if TYPE_CHECKING:
    from miner.encoders.samu import SpeechEncoder

log = logging.getLogger(__name__)

__all__ = ["FrameCache", "backbone_fingerprint"]


def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """sha256 over the backbone's state dict (names, shapes, bytes): changes whenever its weights do."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _utterance_key(utterances: Sequence[Utterance]) -> str:
    h = hashlib.sha256()
    for u in utterances:
        h.update(f"{u.audio}\t{u.start:.6f}\t{u.duration:.6f}\n".encode())
    return h.hexdigest()


class FrameCache:
    """Read access to cached frames.

    Args:
        frames: float16 (total_frames, hidden) array (a memmap).
        index: int64 (n, 2): utterance i owns ``frames[index[i, 0] : index[i, 0] + index[i, 1]]``.
    """

    def __init__(self, frames: np.ndarray, index: np.ndarray):
        self.frames = frames
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def hidden_size(self) -> int:
        return int(self.frames.shape[1])

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Padded frames float32 (B, T, H) and mask bool (B, T) for utterance rows ``idx``."""
        lengths = [int(self.index[i, 1]) for i in idx]
        frames = torch.zeros(len(idx), max(lengths), self.hidden_size, dtype=torch.float32)
        mask = torch.zeros(len(idx), max(lengths), dtype=torch.bool)
        for row, (i, n) in enumerate(zip(idx, lengths, strict=True)):
            a = int(self.index[i, 0])
            frames[row, :n] = torch.from_numpy(np.asarray(self.frames[a : a + n], dtype=np.float32))
            mask[row, :n] = True
        return {"frames": frames, "mask": mask}

    @classmethod
    def open(cls, stem: Path) -> FrameCache:
        meta = json.loads(stem.with_suffix(".json").read_text())
        frames = np.memmap(
            stem.with_suffix(".bin"),
            dtype=np.float16,
            mode="r",
            shape=(int(meta["total_frames"]), int(meta["hidden_size"])),
        )
        return cls(frames, np.load(stem.with_suffix(".index.npy")))

    @classmethod
    def build_or_open(
        cls,
        model: SpeechEncoder,
        utterances: Sequence[Utterance],
        cache_dir: str | os.PathLike[str],
        batch_seconds: float,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> FrameCache:
        """Open the cache for this backbone and these utterances, computing it first if needed.

        Args:
            model: a ``SpeechEncoder`` (its ``backbone`` runs in eval mode; training mode is restored).
            utterances: rows to encode.
            cache_dir: folder of the cache files.
            batch_seconds: padded audio per forward pass.
            device: where the backbone runs.
        """
        backbone = model.backbone
        key = hashlib.sha256(
            (backbone_fingerprint(backbone) + _utterance_key(utterances)).encode()
        ).hexdigest()
        stem = Path(cache_dir) / f"frames-{key[:16]}"
        if stem.with_suffix(".json").is_file():
            log.info("backbone frames of %d utterances from cache %s", len(utterances), stem)
            return cls.open(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        durations = np.array([u.duration for u in utterances])
        size = batch_seconds if backbone.padding_safe else 0.0  # group-norm CNNs: one clip at a time
        batches = bucket_batches(np.arange(len(utterances)), durations, max(size, 1e-9))
        index = np.zeros((len(utterances), 2), dtype=np.int64)
        total = 0
        was_training = backbone.training
        backbone.eval()
        device = torch.device(device)
        tmp_bin = stem.with_name(f".{stem.name}.{os.getpid()}.bin")
        try:
            with torch.inference_mode(), open(tmp_bin, "wb") as f:
                for idx in tqdm(batches, desc="cache backbone frames", unit="batch", disable=not progress):
                    waves = [load_utterance_audio(utterances[i]) for i in idx]
                    inputs = {k: v.to(device) for k, v in backbone.prepare(waves).items()}
                    frames, mask = backbone(inputs)
                    for row, i in enumerate(idx):
                        valid = frames[row][mask[row]].float().cpu().numpy().astype(np.float16)
                        f.write(valid.tobytes())  # streamed: memory stays at one batch
                        index[i] = (total, len(valid))
                        total += len(valid)
            os.replace(tmp_bin, stem.with_suffix(".bin"))
            np.save(stem.with_suffix(".index.npy"), index)
            meta = {
                "total_frames": total,
                "hidden_size": int(backbone.hidden_size),
                "utterances": len(utterances),
                "dtype": "float16",
            }
            stem.with_suffix(".json").write_text(json.dumps(meta))
        finally:
            tmp_bin.unlink(missing_ok=True)
            backbone.train(was_training)
        log.info("cached %d frames of %d utterances in %s", total, len(utterances), stem)
        return cls.open(stem)
