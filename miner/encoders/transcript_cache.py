"""Whisper transcripts kept on disk, keyed by the clip's samples, the Whisper model and the language asked for.

Whisper-base decodes 2-3 audio-seconds per second on a 2-core CPU, 10x slower than the SAMU model: evaluating
the cascade and the fusion for two models on the same clips, or choosing a fusion weight and then testing, would
transcribe the same clips again and again. A transcript depends only on the samples, the Whisper weights,
decoding settings and the language hint, so it is cached under ``<data root>/cache/transcripts/<whisper key>/``,
one small text file per clip (``<sha1 of samples and language>.txt``), written atomically, and Whisper's confidence
in it beside (``.score``: one float; folders from before scores were kept have none, and those clips are heard
again by callers that need the score).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from miner.home import data_root

__all__ = ["TranscriptCache"]


class TranscriptCache:
    """Transcripts of one Whisper setup (``whisper_key``: a hash of its weights and decoding settings).

    Args:
        whisper_key: identifies the model and decoding settings; clips heard by another setup never match.
        root: data root (default ``$MINER_HOME``); the cache lives under ``root/cache/transcripts``.
    """

    def __init__(self, whisper_key: str, root: str | os.PathLike[str] | None = None) -> None:
        self.folder = data_root(root) / "cache" / "transcripts" / whisper_key

    @staticmethod
    def clip_key(wave: np.ndarray, lang: str | None) -> str:
        """sha1 over the float32 samples and the language hint (None: detected)."""
        h = hashlib.sha1(np.ascontiguousarray(wave, dtype=np.float32).tobytes())
        h.update(f"|{lang or ''}".encode())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.txt"

    def get_many(self, waves: Sequence[np.ndarray], langs: Sequence[str | None]) -> list[str | None]:
        """The cached transcript of each clip, or None where it was never transcribed with this setup."""
        out: list[str | None] = []
        for wave, lang in zip(waves, langs, strict=True):
            path = self._path(self.clip_key(wave, lang))
            out.append(path.read_text(encoding="utf-8") if path.is_file() else None)
        return out

    def get_many_scored(
        self, waves: Sequence[np.ndarray], langs: Sequence[str | None]
    ) -> list[tuple[str, float] | None]:
        """The cached (transcript, confidence) of each clip, or None where either is missing."""
        out: list[tuple[str, float] | None] = []
        for wave, lang in zip(waves, langs, strict=True):
            path = self._path(self.clip_key(wave, lang))
            score = path.with_suffix(".score")
            if path.is_file() and score.is_file():
                try:
                    out.append((path.read_text(encoding="utf-8"), float(score.read_text(encoding="utf-8"))))
                    continue
                except ValueError:  # a damaged score file: hear the clip again
                    pass
            out.append(None)
        return out

    def put_many(
        self,
        waves: Sequence[np.ndarray],
        langs: Sequence[str | None],
        texts: Sequence[str],
        scores: Sequence[float] | None = None,
    ) -> None:
        """Store transcripts, and their confidences when given (temp file + rename: a reader never sees half a
        file; the score is written first, so a transcript with a score file always has its own)."""
        for i, (wave, lang, text) in enumerate(zip(waves, langs, texts, strict=True)):
            path = self._path(self.clip_key(wave, lang))
            path.parent.mkdir(parents=True, exist_ok=True)
            if scores is not None:
                _write_atomic(path.with_suffix(".score"), repr(float(scores[i])))
            _write_atomic(path, text)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
