"""Speech recognition for the paper's cascade baseline (ASR-LaBSE): Whisper transcribes, text encoders embed.

:class:`WhisperTranscriber` runs a CTranslate2 Whisper folder on CPU: by default the Whisper base that the
``demo`` packages ship (:func:`miner.encoders.whisper_ct2.ct2_model_dir`); any folder written by
``ct2-transformers-converter`` (e.g. a converted ``openai/whisper-large-v3``) works too. Greedy decoding with
the prompt ``<|startoftranscript|><|LANG|><|transcribe|><|notimestamps|>``, as Whisper's own ``transcribe``
without timestamps; the language comes from the caller when known and is detected otherwise. Clips longer
than Whisper's 30 s window are cut into equal windows whose transcripts are joined. Nothing here downloads.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from miner.encoders.batching import length_sorted_batches
from miner.encoders.whisper_ct2 import _read_vocabulary, ct2_model_dir, load_ct2_whisper
from miner.types import SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = [
    "WHISPER_WINDOW_S",
    "WhisperTranscriber",
    "decode_byte_level",
    "split_windows",
    "whisper_language_token",
]

WHISPER_WINDOW_S = 30  # Whisper's encoder sees exactly 30 s (3000 mel frames); longer clips are cut
_SOT, _TRANSCRIBE, _NO_TIMESTAMPS = "<|startoftranscript|>", "<|transcribe|>", "<|notimestamps|>"
# Codes that manifests use but Whisper spells otherwise (ISO 639-3, old ISO 639-1, Whisper's own quirks).
_LANG_ALIASES = {
    "jv": "jw",
    "iw": "he",
    "nb": "no",
    "cmn": "zh",
    "zho": "zh",
    "eng": "en",
    "fra": "fr",
    "fre": "fr",
    "deu": "de",
    "ger": "de",
    "spa": "es",
    "ita": "it",
    "por": "pt",
    "rus": "ru",
    "jpn": "ja",
    "ara": "ar",
    "nld": "nl",
    "tur": "tr",
    "pol": "pl",
}


def whisper_language_token(lang: str | None, languages: Collection[str]) -> str | None:
    """Whisper's language token for a manifest language code, or None when Whisper must detect it.

    Args:
        lang: e.g. ``"fr"``, ``"fr_FR"``, ``"en-US"``, ``"fra"``; None or empty for unknown.
        languages: the codes the model knows (``"en"``, ``"fr"``, ...).

    Returns:
        ``"<|fr|>"`` and the like, or None (unknown ``lang``, or one the model does not know: logged).
    """
    if lang is None or not lang.strip():
        return None
    code = lang.strip().lower().replace("-", "_")
    for candidate in (code, code.split("_")[0]):
        candidate = _LANG_ALIASES.get(candidate, candidate)
        if candidate in languages:
            return f"<|{candidate}|>"
    logger.warning("Whisper knows no language %r: detecting the language of those clips instead", lang)
    return None


def split_windows(wave: np.ndarray, max_samples: int) -> list[np.ndarray]:
    """Cut a clip into the fewest equal windows of at most ``max_samples`` (no short tail to hallucinate on).

    Args:
        wave: float32 (samples,).
        max_samples: window length limit, >= 1.

    Returns:
        Views of ``wave`` in order, concatenating back to it.
    """
    n = max(1, math.ceil(len(wave) / max_samples))
    step = math.ceil(len(wave) / n)
    return [wave[i : i + step] for i in range(0, len(wave), step)] or [wave]


class WhisperTranscriber:
    """Transcribe 16 kHz waveforms with a CTranslate2 Whisper model on CPU.

    Args:
        model_dir: a CTranslate2 Whisper folder (``model.bin``, ``config.json``, vocabulary, and
            ``tokenizer.json`` when available); None for the packaged Whisper base under the data root.
        compute_type: CTranslate2 compute type; ``int8`` (default) is about 1.7x faster than ``float32`` on
            CPU for the same transcripts of clean speech.
        beam_size: 1 for greedy decoding (the paper's baseline setting), more for beam search.
        intra_threads: CPU threads (0: CTranslate2's default).

    Raises:
        FileNotFoundError: no model folder given and the demo packages are absent (the message says how to
            install them), or the folder holds no vocabulary.
        ImportError: ctranslate2 is not installed.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        compute_type: str = "int8",
        beam_size: int = 1,
        intra_threads: int = 0,
    ) -> None:
        from transformers import WhisperFeatureExtractor

        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.model_dir = Path(model_dir) if model_dir is not None else ct2_model_dir()
        if not (self.model_dir / "model.bin").is_file():
            raise FileNotFoundError(
                f"{self.model_dir} is not a CTranslate2 model folder (no model.bin): pass a folder written "
                "by ct2-transformers-converter, or none for the packaged Whisper base"
            )
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.model = load_ct2_whisper(self.model_dir, compute_type=compute_type, intra_threads=intra_threads)
        self.feature_extractor = WhisperFeatureExtractor(
            feature_size=self.model.n_mels, sampling_rate=SAMPLE_RATE, chunk_length=WHISPER_WINDOW_S
        )
        vocab = _read_vocabulary(self.model_dir)
        if vocab is None:
            raise FileNotFoundError(f"{self.model_dir} holds no vocabulary.txt / vocabulary.json")
        config = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        self.languages: frozenset[str] = frozenset(vocab[i][2:-2] for i in config.get("lang_ids", []))
        self._tokenizer = None
        if (self.model_dir / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))

    def transcribe(
        self, waveforms: Sequence[np.ndarray], langs: Sequence[str | None], batch_size: int = 8
    ) -> list[str]:
        """Transcribe clips in their own language.

        Args:
            waveforms: float32 (samples,) mono clips at 16 kHz (e.g. :func:`miner.audio.load_audio`).
            langs: one language code per clip (``"fr"``, ``"fr_FR"``, ``"fra"``...), None to detect it.
            batch_size: windows of 30 s per forward pass.

        Returns:
            One stripped transcript per clip, in input order ("" when Whisper hears nothing).

        Raises:
            ValueError: lengths differ, or a clip is empty or not 1-D.
        """
        return [text for text, _ in self.transcribe_scored(waveforms, langs, batch_size)]

    def transcribe_scored(
        self, waveforms: Sequence[np.ndarray], langs: Sequence[str | None], batch_size: int = 8
    ) -> list[tuple[str, float]]:
        """As :meth:`transcribe`, with Whisper's confidence in each transcript.

        Returns:
            (transcript, confidence) per clip, in input order; the confidence is the mean over the clip's 30 s
            windows of the decoded tokens' average log-probability (CTranslate2's length-normalised score):
            0 is certain, about -0.3 or above is typical of clean speech, below -1 of speech Whisper does not
            understand (faster-whisper drops segments under -1).
        """
        if len(waveforms) != len(langs):
            raise ValueError(f"{len(waveforms)} waveforms but {len(langs)} languages: give one per clip")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        window = WHISPER_WINDOW_S * SAMPLE_RATE
        pieces: list[np.ndarray] = []
        owners: list[int] = []
        tokens: list[str | None] = []
        multilingual = self.model.is_multilingual
        # One lookup per distinct code: an unknown language is logged once, not once per clip.
        by_code = {x: whisper_language_token(x, self.languages) if multilingual else None for x in set(langs)}
        for i, (wave, lang) in enumerate(zip(waveforms, langs, strict=True)):
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1 or wave.size == 0:
                raise ValueError(
                    f"clip #{i} must be a non-empty 1-D array of samples, got shape {wave.shape}"
                )
            token = by_code[lang]
            for piece in split_windows(wave, window):
                pieces.append(piece)
                owners.append(i)
                tokens.append(token)
        t0 = time.perf_counter()
        texts = [""] * len(pieces)
        scores = [0.0] * len(pieces)
        for idx in length_sorted_batches([len(p) for p in pieces], batch_size):
            out = self._transcribe_batch([pieces[j] for j in idx], [tokens[j] for j in idx])
            for j, (text, score) in zip(idx, out, strict=True):
                texts[j], scores[j] = text, score
        joined: list[list[str]] = [[] for _ in waveforms]
        window_scores: list[list[float]] = [[] for _ in waveforms]
        for owner, text, score in zip(owners, texts, scores, strict=True):
            window_scores[owner].append(score)
            if text:
                joined[owner].append(text)
        elapsed = time.perf_counter() - t0
        audio_s = sum(len(p) for p in pieces) / SAMPLE_RATE
        logger.info(
            "transcribed %d clips (%.1f s of audio) in %.1f s: %.2f clips/s, %.1fx real time (%s)",
            len(waveforms),
            audio_s,
            elapsed,
            len(waveforms) / max(elapsed, 1e-9),
            audio_s / max(elapsed, 1e-9),
            self.compute_type,
        )
        return [(" ".join(parts), float(np.mean(ws))) for parts, ws in zip(joined, window_scores, strict=True)]

    def _transcribe_batch(self, waves: list[np.ndarray], tokens: list[str | None]) -> list[tuple[str, float]]:
        import ctranslate2

        feats = self.feature_extractor(waves, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32))
        # Encode once: language detection and decoding both reuse the encoder output.
        encoded = self.model.encode(view, to_cpu=False)
        if self.model.is_multilingual and any(t is None for t in tokens):
            detected = self.model.detect_language(encoded)
            tokens = [t if t is not None else detected[j][0][0] for j, t in enumerate(tokens)]
            logger.debug("detected languages: %s", [d[0] for d in detected])
        prompts = [[_SOT, t, _TRANSCRIBE, _NO_TIMESTAMPS] if t else [_SOT, _NO_TIMESTAMPS] for t in tokens]
        results = self.model.generate(encoded, prompts, beam_size=self.beam_size, return_scores=True)
        return [(self._decode(r), float(r.scores[0]) if r.scores else float("-inf")) for r in results]

    def _decode(self, result: Any) -> str:
        """Text of the best hypothesis: tokenizer.json's decoder, else byte-level decoding of the tokens."""
        if self._tokenizer is not None:
            return self._tokenizer.decode(result.sequences_ids[0], skip_special_tokens=True).strip()
        return decode_byte_level(result.sequences[0])


def decode_byte_level(tokens: Sequence[str]) -> str:
    """Join GPT-2 byte-level BPE tokens (``"Ġcat"``) into text, dropping Whisper's ``<|...|>`` tokens."""
    from tokenizers import decoders

    kept = [t for t in tokens if not (t.startswith("<|") and t.endswith("|>"))]
    return decoders.ByteLevel().decode(kept).strip()
