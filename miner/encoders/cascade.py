"""The ASR cascade as a speech encoder: Whisper transcribes, the text encoder paired with a SAMU model embeds.

The paper's baseline (ASR-LaBSE) made first class: :class:`AsrSpeechEncoder` has the interface callers use of
a SAMU ``SpeechEncoder`` (``encode``, ``dim``, ``space_id``, ``model_id``, ``fingerprint``, ``device``,
``config``, ``source_dir``), so ``miner search|mine|eval retrieval|serve`` take ``--model asr`` like a SAMU
folder. Its text side is the SAMU model's teacher with the model's centring (``paired:<folder>``), so the
vectors live in that model's space and search the databases built for it.

Measured on the 36 shipped demo clips (robotic espeak-ng speech, busy 2-core CPU): the cascade embeds 2.3
audio-seconds per second, the SAMU demo model 19: Whisper's decoding makes it the slow kind
(``bench/bench_speech_kinds.py``, ``docs/benchmarks.md``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from miner.encoders.speech_spec import SpeechSpec
from miner.encoders.speed import EncodeSpeed, Stopwatch
from miner.encoders.transcript_cache import TranscriptCache
from miner.spaces import check_same_space

__all__ = ["AsrSpeechEncoder", "check_waveforms"]

log = logging.getLogger(__name__)

_CHUNK_CLIPS = 64  # clips per transcription call: the progress bar's step


def check_waveforms(waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The clips as a list of float32 arrays; the same errors as ``SpeechEncoder.encode``.

    Raises:
        TypeError: a single 1-D array instead of a list of clips.
        ValueError: a clip is empty or not 1-D (the message names its position).
    """
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
        raise TypeError("encode() takes a list of waveforms; wrap a single clip in a list")
    out = []
    for i, w in enumerate(waveforms):
        if np.asarray(w).ndim != 1 or len(w) == 0:
            raise ValueError(f"waveform #{i} must be a non-empty 1-D array, got shape {np.shape(w)}")
        out.append(np.asarray(w, dtype=np.float32))
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def read_samu_config(folder: Path) -> Any:
    """The ``SpeechEncoderConfig`` of a SAMU folder from its config.json alone (no weights load)."""
    from miner.encoders.samu import CONFIG_NAME, SpeechEncoderConfig

    cfg = folder / CONFIG_NAME
    if not cfg.is_file():
        raise FileNotFoundError(
            f"{cfg} not found: the ASR cascade needs the folder of a SAMU model (its config.json names the "
            "text encoder to pair the transcripts with); pass 'asr:<SAMU folder>', or 'asr' for the demo model"
        )
    try:
        return SpeechEncoderConfig.from_dict(json.loads(cfg.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{cfg} is not a valid SAMU config: {exc}") from exc


class AsrSpeechEncoder:
    """Waveforms -> Whisper transcripts -> the paired text encoder -> float32 (n, dim), rows L2-normalised.

    Args:
        samu_model: the SAMU model folder whose teacher (and centring) embeds the transcripts; None for the
            shipped demo model, so that the vectors search databases built with ``paired:`` of it.
        lang: the language every clip is transcribed in (``"fr"``, ``"fra"``...); None to detect it per clip.
            A call's own ``langs`` take precedence where they name one.
        transcriber: a loaded transcriber (``transcribe(waves, langs, batch_size) -> list[str]``); None for
            :class:`miner.asr.WhisperTranscriber` on the packaged Whisper base.
        text_encoder: a loaded text encoder in the SAMU model's space; None for ``paired:<samu_model>``.
        device: torch device of a sentence-transformers teacher (Whisper runs on CPU through CTranslate2).

    Raises:
        FileNotFoundError: no SAMU config in ``samu_model``, or the Whisper packages are missing.
        SpaceMismatchError: ``text_encoder`` is not in the SAMU model's space.
    """

    kind = "asr"

    def __init__(
        self,
        samu_model: str | os.PathLike[str] | None = None,
        *,
        lang: str | None = None,
        transcriber: Any = None,
        text_encoder: Any = None,
        device: str | None = None,
    ) -> None:
        if samu_model is None:
            from miner.demo import demo_model_dir

            folder = demo_model_dir()
        else:
            folder = Path(samu_model).expanduser()
        self.config = read_samu_config(folder)  # what load_text_encoder_for(self) reads, as for SAMU
        self.source_dir: str | None = str(folder.resolve())
        self.lang = lang
        if transcriber is None:
            from miner.asr import WhisperTranscriber

            transcriber = WhisperTranscriber()
        self.transcriber = transcriber
        if text_encoder is None:
            from miner.encoders.text import paired_text_encoder

            text_encoder = paired_text_encoder(self.source_dir, device=device)
        check_same_space(
            text_encoder.space_id,
            self.config.space_id,
            f"text encoder {text_encoder.model_id}",
            f"SAMU model {folder}",
            text_encoder.dim,
            self.config.dim,
        )
        self.text_encoder = text_encoder
        self.last_transcripts: list[str] | None = None
        # float64 (n,) Whisper confidence per clip of the last call (mean token log-prob; NaN where unknown), or
        # None when the transcriber gives no scores
        self.last_confidence: np.ndarray | None = None
        self.last_speed: EncodeSpeed | None = None

    # -- what callers read ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.config.dim)

    @property
    def space_id(self) -> str:
        return str(self.config.space_id)

    @property
    def model_id(self) -> str:
        """The speech model string that reloads this encoder, e.g. ``asr:/abs/samu/folder``."""
        return str(SpeechSpec("asr", self.source_dir, None, self.lang))

    @property
    def fingerprint(self) -> str:
        """12 hex digits over the Whisper model, the language, and the teacher and space of the text side.

        Never equal to a SAMU model's: per-file and embedding caches keyed by it keep the kinds apart.
        """
        t = self.transcriber
        model_dir = getattr(t, "model_dir", None)
        weights = Path(model_dir) / "model.bin" if model_dir is not None else None
        whisper = {
            "name": Path(model_dir).name if model_dir is not None else type(t).__name__,
            "bytes": weights.stat().st_size if weights is not None and weights.is_file() else None,
            "compute_type": getattr(t, "compute_type", None),
            "beam_size": getattr(t, "beam_size", None),
        }
        raw = json.dumps(
            {
                "kind": "asr",
                "whisper": whisper,
                "lang": self.lang,
                "teacher": self.config.teacher,
                "space": self.space_id,
            },
            sort_keys=True,
        )
        return hashlib.sha1(raw.encode()).hexdigest()[:12]

    def _transcript_cache(self) -> TranscriptCache | None:
        """The disk cache of this Whisper setup; None for a transcriber that names no model folder (fakes)."""
        t = self.transcriber
        model_dir = getattr(t, "model_dir", None)
        if model_dir is None or os.environ.get("MINER_ASR_CACHE", "1") == "0":
            return None
        weights = Path(model_dir) / "model.bin"
        setup = [str(Path(model_dir).resolve()), weights.stat().st_size if weights.is_file() else None,
                 getattr(t, "compute_type", None), getattr(t, "beam_size", None)]  # fmt: skip
        return TranscriptCache(hashlib.sha1(json.dumps(setup).encode()).hexdigest()[:16])

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cpu")

    # -- encoding --------------------------------------------------------------------------------------------
    def encode(
        self,
        waveforms: Sequence[np.ndarray],
        batch_size: int = 8,
        progress: bool = False,
        langs: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Embed 16 kHz mono float32 waveforms through their transcripts.

        Args:
            waveforms: n 1-D float32 arrays at 16 kHz.
            batch_size: 30 s windows per Whisper forward pass.
            progress: show a progress bar.
            langs: one language per clip (None entries: the encoder's ``lang``, else detected).

        Returns:
            float32 (n, dim), rows L2-normalised, in input order; ``last_transcripts`` holds the n transcripts
            and ``last_speed`` the call's audio-seconds per second.
        """
        return self.encode_with_transcripts(waveforms, batch_size, progress, langs)[0]

    def encode_with_transcripts(
        self,
        waveforms: Sequence[np.ndarray],
        batch_size: int = 8,
        progress: bool = False,
        langs: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """As :meth:`encode`, plus the transcripts: (float32 (n, dim), n strings; "" where Whisper heard none)."""
        waves = check_waveforms(waveforms)
        if langs is not None and len(langs) != len(waves):
            raise ValueError(f"{len(waves)} waveforms but {len(langs)} languages: give one per clip")
        per_clip = [(x or self.lang) for x in langs] if langs is not None else [self.lang] * len(waves)
        watch = Stopwatch(waves)
        cache = self._transcript_cache()
        # Whisper's confidence comes with the transcript where the transcriber gives one (a fused encoder
        # weighs each clip by it); a transcriber without transcribe_scored leaves last_confidence None.
        scored = callable(getattr(self.transcriber, "transcribe_scored", None))
        known: list[tuple[str, float] | None]
        if cache is None:
            known = [None] * len(waves)
        elif scored:
            known = cache.get_many_scored(waves, per_clip)
        else:
            known = [None if t is None else (t, float("nan")) for t in cache.get_many(waves, per_clip)]
        todo = [i for i, t in enumerate(known) if t is None]
        starts = range(0, len(todo), _CHUNK_CLIPS)
        for lo in tqdm(starts, desc="transcribe", unit="chunk", disable=not progress or len(starts) < 2):
            rows = todo[lo : lo + _CHUNK_CLIPS]
            chunk, chunk_langs = [waves[i] for i in rows], [per_clip[i] for i in rows]
            if scored:
                heard = list(self.transcriber.transcribe_scored(chunk, chunk_langs, batch_size=batch_size))
            else:
                texts = self.transcriber.transcribe(chunk, chunk_langs, batch_size=batch_size)
                heard = [(t, float("nan")) for t in texts]
            for i, pair in zip(rows, heard, strict=True):
                known[i] = pair
            if cache is not None:
                cache.put_many(chunk, chunk_langs, [t for t, _ in heard], [c for _, c in heard] if scored else None)
        if cache is not None and len(todo) < len(waves):
            log.info("ASR cascade: %d of %d transcripts from the cache", len(waves) - len(todo), len(waves))
        transcripts = [(t[0] if t is not None else "") or "" for t in known]
        self.last_confidence = (
            np.array([t[1] if t is not None else np.nan for t in known], np.float64) if scored else None
        )
        if transcripts:
            vectors = _unit_rows(self.text_encoder.encode(transcripts))
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        self.last_transcripts = transcripts
        self.last_speed = watch.done(log, "ASR cascade embedded")
        return vectors, transcripts
