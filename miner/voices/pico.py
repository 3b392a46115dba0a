"""SVOX Pico (the Android 2.x voices, HMM synthesis) through the PyPI package ``py-nanotts`` (C extension,
lingware inside the wheel, no network).

Voices (one per language): ``en-US``, ``en-GB``, ``de-DE``, ``es-ES``, ``fr-FR``, ``it-IT``. Controls, both
native: ``rate`` is Pico's speed multiplier, ``pitch`` its pitch multiplier (F0 x1.4 measured x1.39). The
volume is set to 0.5: at Pico's default volume about 0.4% of the samples of an ordinary English sentence
clip at full scale.

Output: 16 kHz int16 PCM, bit-for-bit the same for the same arguments. The engine's output depends on what
its process did before (some memory it reads without setting, it seems): in one process the same en-GB sentence
came out 92,992 samples long first, 92,160 after a French clip and 87,296 after an en-US one, and a child forked
from a busy process varies with its parent's history the same way, while a new interpreter gives the same bytes
every time. So every call runs the engine in a new interpreter, which makes test sets rebuilt from the recipe
identical; it costs ~45 ms a clip (a 6.4 s sentence: 70-82 ms against 27-35 ms in-process, measured side by side
with an evaluation on the other core), so ~80x real time instead of the engine's 110-210x
(``bench/bench_voices.py``, one core, other jobs running); 14-18 characters per second of speech at rate 1.0.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np

from miner.voices.base import Availability, EngineSynthesizer, SynthesisError

__all__ = ["PICO_VOICES", "PicoSynthesizer"]

PICO_VOICES = ("de-DE", "en-GB", "en-US", "es-ES", "fr-FR", "it-IT")
VOLUME = 0.5


class PicoSynthesizer(EngineSynthesizer):
    """SVOX Pico via ``py_nanotts.NanoTTS``; one voice per language, rate and pitch native."""

    name = "pico"

    def available(self) -> Availability:
        """Installed when the ``py-nanotts`` package is (``pip install py-nanotts``, or the ``voices`` extra)."""
        if importlib.util.find_spec("py_nanotts") is None:
            return Availability(False, "the py-nanotts package is not installed: pip install py-nanotts")
        return Availability(True)

    def _voice_languages(self) -> dict[str, str]:
        return {v: v.lower() for v in PICO_VOICES}

    def native_controls(self, voice: str) -> frozenset[str]:
        """Both: Pico's speed and pitch multipliers."""
        return frozenset({"rate", "pitch"})

    def _render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        # A new interpreter per call: the engine's output depends on what the process did before (module
        # docstring), and a forked child inherits that, so only a fresh process gives the same clip every time.
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, voice, repr(rate), repr(pitch), repr(VOLUME)],
                input=text.encode("utf-8"),
                capture_output=True,
                check=False,
                timeout=600,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SynthesisError(f"pico voice {voice!r} could not run on {text[:60]!r}: {exc}") from exc
        if proc.returncode != 0 or not proc.stdout:
            detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no audio"]
            if "No module named" in detail[0]:
                raise SynthesisError(f"py-nanotts failed to load: {detail[0]}")
            raise SynthesisError(f"pico voice {voice!r} failed on {text[:60]!r}: {detail[0]}")
        return np.frombuffer(proc.stdout, dtype="<i2").astype(np.float32) / 32768.0, 16000


# The child: text on stdin, voice / speed / pitch / volume as arguments, int16 little-endian PCM on stdout.
_CHILD = """
import sys
from py_nanotts import NanoTTS
voice, speed, pitch, volume = sys.argv[1], *map(float, sys.argv[2:5])
text = sys.stdin.buffer.read().decode("utf-8")
sys.stdout.buffer.write(NanoTTS().speak(text, voice=voice, speed=speed, pitch=pitch, volume=volume))
"""
