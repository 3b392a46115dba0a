"""Backbone frames computed once and kept on disk, for runs whose backbone stays frozen throughout.

Training only pooling + projection on cached frames skips the backbone's forward pass at every step (the
whole cost on CPU). Frames are computed in eval mode (no dropout, no time masking) and stored as float16,
valid frames only, in time order, so a batch of cached frames is what the backbone gives for those clips.

The cache folder holds segments; a segment is the frames of one list of utterances under one backbone:
``frames-<key>.bin`` raw float16 (total_frames, hidden), ``frames-<key>.index.npy`` int64 (n, 2) of
(first frame, frame count) per utterance, ``frames-<key>.utts.txt`` the utterances (``audio, start, duration``
per line), and ``frames-<key>.json`` (written last: its presence marks a complete segment; it names the
backbone fingerprint). ``<key>`` hashes the backbone weights and the segment's utterance list.

A request for utterances reuses every segment of the same backbone that holds some of them and computes only
the missing ones, in segments of ``SEGMENT_UTTERANCES``: adding clips to a manifest costs only the new clips,
and a build that dies loses at most one segment's work.
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

from index.manifest import atomic_write_bytes
from miner.train.data import Utterance, bucket_batches, load_utterance_audio

if TYPE_CHECKING:
    from miner.encoders.backbones import Backbone
    from miner.encoders.samu import SpeechEncoder

log = logging.getLogger(__name__)

__all__ = ["FrameCache", "backbone_fingerprint", "SEGMENT_UTTERANCES"]

# Utterances per newly computed segment: the work a crash can lose (~4 min of audio-frames on 2 CPU cores).
SEGMENT_UTTERANCES = 4000


def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """sha256 over the backbone's parameter names, shapes and bytes (which frames these are)."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _utterance_line(u: Utterance) -> str:
    # normpath: the same file reached from two manifest folders (``a/../x.flac``, ``b/../x.flac``) is one entry
    return f"{os.path.normpath(u.audio)}\t{u.start:.6f}\t{u.duration:.6f}"


def _normalised_line(line: str) -> str:
    """An utterance line as written by any version (older ones kept ``..`` in the path), normalised."""
    audio, sep, rest = line.partition("\t")
    return os.path.normpath(audio) + sep + rest


def _utterance_key(utterances: Sequence[Utterance]) -> str:
    h = hashlib.sha256()
    for u in utterances:
        h.update((_utterance_line(u) + "\n").encode())
    return h.hexdigest()


def _segment_stem(cache_dir: Path, fingerprint: str, utterances: Sequence[Utterance]) -> Path:
    key = hashlib.sha256((fingerprint + _utterance_key(utterances)).encode()).hexdigest()
    return cache_dir / f"frames-{key[:16]}"


class FrameCache:
    """Read access to cached frames, possibly spread over several segments.

    Args:
        parts: float16 (frames_p, hidden) arrays (memmaps), one per segment.
        index: int64 (n, 3): utterance i owns ``parts[index[i, 0]][index[i, 1] : index[i, 1] + index[i, 2]]``.
    """

    def __init__(self, parts: Sequence[np.ndarray], index: np.ndarray):
        self.parts = list(parts)
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def hidden_size(self) -> int:
        return int(self.parts[0].shape[1])

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Padded frames float32 (B, T, H) and mask bool (B, T) for utterance rows ``idx``."""
        lengths = [int(self.index[i, 2]) for i in idx]
        frames = torch.zeros(len(idx), max(lengths), self.hidden_size, dtype=torch.float32)
        mask = torch.zeros(len(idx), max(lengths), dtype=torch.bool)
        for row, (i, n) in enumerate(zip(idx, lengths, strict=True)):
            part, a = int(self.index[i, 0]), int(self.index[i, 1])
            frames[row, :n] = torch.from_numpy(np.asarray(self.parts[part][a : a + n], dtype=np.float32))
            mask[row, :n] = True
        return {"frames": frames, "mask": mask}

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
        """Open the frames of these utterances, computing those no segment of this backbone holds yet.

        Args:
            model: a ``SpeechEncoder`` (its ``backbone`` runs in eval mode; training mode is restored).
            utterances: rows to encode.
            cache_dir: folder of the cache segments.
            batch_seconds: padded audio per forward pass.
            device: where the backbone runs.
        """
        backbone = model.backbone
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        fingerprint = backbone_fingerprint(backbone)
        exact = _segment_stem(cache, fingerprint, utterances)
        if exact.with_suffix(".json").is_file():  # the same list as before (also a cache of older versions)
            _describe_segment(exact, fingerprint, utterances)
        found = _segments_of(cache, fingerprint)
        missing = [u for u in utterances if _utterance_line(u) not in found]
        if missing:
            log.info(
                "backbone frames: %d of %d utterances cached, computing %d",
                len(utterances) - len(missing),
                len(utterances),
                len(missing),
            )
            for start in range(0, len(missing), SEGMENT_UTTERANCES):
                chunk = missing[start : start + SEGMENT_UTTERANCES]
                stem = _segment_stem(cache, fingerprint, chunk)
                _compute_segment(backbone, chunk, stem, fingerprint, batch_seconds, device, progress)
                for row, u in enumerate(chunk):
                    found[_utterance_line(u)] = (stem, row)
        else:
            log.info("backbone frames of %d utterances from cache %s", len(utterances), cache)
        stems = sorted({found[_utterance_line(u)][0] for u in utterances})
        part_of = {stem: p for p, stem in enumerate(stems)}
        parts, spans = zip(*(_open_segment(stem) for stem in stems), strict=True)
        index = np.empty((len(utterances), 3), dtype=np.int64)
        for i, u in enumerate(utterances):
            stem, row = found[_utterance_line(u)]
            p = part_of[stem]
            index[i] = (p, spans[p][row, 0], spans[p][row, 1])
        return cls(parts, index)


def _open_segment(stem: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames float16 memmap (total, hidden), index int64 (n, 2)) of a complete segment."""
    meta = json.loads(stem.with_suffix(".json").read_text())
    frames = np.memmap(
        stem.with_suffix(".bin"),
        dtype=np.float16,
        mode="r",
        shape=(int(meta["total_frames"]), int(meta["hidden_size"])),
    )
    return frames, np.load(stem.with_suffix(".index.npy"))


def _segments_of(cache: Path, fingerprint: str) -> dict[str, tuple[Path, int]]:
    """utterance line -> (segment stem, row) over the complete, described segments of this backbone."""
    found: dict[str, tuple[Path, int]] = {}
    for meta_file in sorted(cache.glob("frames-*.json")):
        stem = meta_file.with_suffix("")
        meta = json.loads(meta_file.read_text())
        utts = stem.with_suffix(".utts.txt")
        if meta.get("backbone") != fingerprint or not utts.is_file():
            continue
        for row, line in enumerate(utts.read_text(encoding="utf-8").splitlines()):
            found.setdefault(_normalised_line(line), (stem, row))
    return found


def _describe_segment(stem: Path, fingerprint: str, utterances: Sequence[Utterance]) -> None:
    """Give a segment written before segments were shared (no utterance list) its list and backbone."""
    meta_file = stem.with_suffix(".json")
    meta = json.loads(meta_file.read_text())
    utts = stem.with_suffix(".utts.txt")
    if meta.get("backbone") == fingerprint and utts.is_file():
        return
    _write_utterance_list(stem, utterances)
    atomic_write_bytes(meta_file, json.dumps({**meta, "backbone": fingerprint}).encode("utf-8"))


def _write_utterance_list(stem: Path, utterances: Sequence[Utterance]) -> None:
    text = "".join(_utterance_line(u) + "\n" for u in utterances)
    atomic_write_bytes(stem.with_suffix(".utts.txt"), text.encode("utf-8"))


def _compute_segment(
    backbone: Backbone,
    utterances: Sequence[Utterance],
    stem: Path,
    fingerprint: str,
    batch_seconds: float,
    device: torch.device | str,
    progress: bool,
) -> None:
    """Run the backbone over ``utterances`` and write segment ``stem`` (its .json last)."""
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
        _write_utterance_list(stem, utterances)
        meta = {
            "total_frames": total,
            "hidden_size": int(backbone.hidden_size),
            "utterances": len(utterances),
            "dtype": "float16",
            "backbone": fingerprint,
        }
        atomic_write_bytes(stem.with_suffix(".json"), json.dumps(meta).encode("utf-8"))
    finally:
        tmp_bin.unlink(missing_ok=True)
        backbone.train(was_training)
    log.info("cached %d frames of %d utterances in %s", total, len(utterances), stem)
