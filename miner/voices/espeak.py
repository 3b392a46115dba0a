"""espeak-ng (formant synthesis, ~100 languages) through its command line: ``espeak-ng --stdout``.

Voices are ``<language voice>[+<variant>]``: every espeak-ng voice installed here (``espeak-ng --voices``,
MBROLA voices left out: they need the separate ``mbrola`` program and data) alone or with one of the
variants ``espeak-ng --voices=variant`` lists (100 usable in espeak-ng 1.51: ``m1``..``m8``, ``f1``..``f5``,
``klatt``..``klatt6``, ``whisper``, ``croak``, named ones such as ``Alicia`` or ``Denis``). 130 voices in 114
languages here, 13,130 ids; English alone has 8 voices x 101 = 808 (``en-us``, ``en-us+m3``, ``en-gb-scotland+klatt2``, ...). espeak-ng silently
falls back to the plain voice for an unknown variant, so ids are checked against those lists.

Controls, both native: ``rate`` x 175 words/min (``-s``, espeak's default); ``pitch`` through ``-p`` (0-99,
default 50), mapped with the F0 ratios measured here on ``en-us`` (p 0 -> 0.75x, 50 -> 1x, 99 -> 1.64x), so
pitch multipliers outside 0.75-1.64 are clamped to that range.

Output: 22.05 kHz, resampled to 16 kHz. Deterministic: the same text, voice, rate and pitch give the same
samples. Measured speed (``bench/bench_voices.py``, pinned to one core of this 2-core machine while other
jobs ran, sentences of 40-230 characters): 170-320x real time (~10 ms of process start per call included);
18-23 characters per second of speech at rate 1.0.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from miner.voices.base import Availability, EngineSynthesizer, SynthesisError

__all__ = [
    "DEFAULT_WPM",
    "ESPEAK",
    "EspeakSynthesizer",
    "espeak_pitch",
    "espeak_pitch_ratio",
    "espeak_wave",
    "list_variants",
    "list_voices",
]

ESPEAK = "/usr/bin/espeak-ng"
DEFAULT_WPM = 175
_OTHER_LANGUAGES = re.compile(r"(\(\S+ \d+\)\s*)*")  # the listing's last column: "(en-us 5)(en 2)"
# espeak-ng -p value -> median F0 relative to -p 50, measured on en-us with a fixed sentence.
_PITCH_P = np.array([0, 20, 35, 50, 65, 80, 99], dtype=np.float64)
_PITCH_RATIO = np.array([0.754, 0.824, 0.912, 1.0, 1.144, 1.351, 1.642], dtype=np.float64)


def _binary() -> str | None:
    return ESPEAK if Path(ESPEAK).exists() else shutil.which("espeak-ng")


def espeak_wave(text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    """Run espeak-ng once and return its waveform.

    Args:
        text: UTF-8 text (sent on stdin, so a sentence starting with "-" is never read as an option).
        voice: ``-v`` argument, e.g. ``en-us+m3``.
        rate: words per minute (``-s``; espeak accepts 80-450).
        pitch: ``-p``, 0-99 (50 is the voice's default).

    Returns:
        ``(samples, sample_rate)``: float32 mono samples of shape (n,) in [-1, 1], and espeak's rate (22050).

    Raises:
        SynthesisError: espeak-ng is missing, failed, timed out or produced no audio.
    """
    binary = _binary()
    if binary is None:
        raise SynthesisError(f"{ESPEAK} not found: apt-get install espeak-ng")
    try:
        proc = subprocess.run(
            [binary, "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "-b", "1", "--stdout"],
            input=text.encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        raise SynthesisError(f"espeak-ng {voice} timed out after 120 s on {text[:60]!r}") from exc
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        raise SynthesisError(f"espeak-ng {voice} failed (rc={proc.returncode}): {proc.stderr.decode()[:200]}")
    samples, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return samples, int(sr)


def espeak_pitch(ratio: float) -> int:
    """Pitch multiplier -> espeak-ng ``-p`` value (0-99), clamped to what espeak can do (0.75x-1.64x)."""
    return int(round(float(np.interp(ratio, _PITCH_RATIO, _PITCH_P))))


def espeak_pitch_ratio(p: int) -> float:
    """espeak-ng ``-p`` value (0-99) -> pitch multiplier (the inverse of :func:`espeak_pitch`)."""
    return round(float(np.interp(p, _PITCH_P, _PITCH_RATIO)), 3)


def _run_list(arg: str) -> list[list[str]]:
    binary = _binary()
    if binary is None:
        return []
    proc = subprocess.run([binary, arg], capture_output=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise SynthesisError(f"espeak-ng {arg} failed: {proc.stderr.decode()[:200]}")
    return [line.split() for line in proc.stdout.decode("utf-8", "replace").splitlines()[1:] if line.strip()]


@functools.lru_cache(maxsize=1)
def list_voices() -> dict[str, str]:
    """espeak-ng voices installed here: voice id (``-v`` name, e.g. ``en-us``) -> language code.

    MBROLA voices (files under ``mb/``) and variants are left out; duplicate language names keep the first.
    """
    out: dict[str, str] = {}
    for fields in _run_list("--voices"):
        if len(fields) < 5 or fields[4].startswith(("mb/", "!v/")) or fields[1] == "variant":
            continue
        out.setdefault(fields[1], fields[1])
    return out


@functools.lru_cache(maxsize=1)
def list_variants() -> tuple[str, ...]:
    """Variant names (``m1``, ``klatt2``, ``Alicia``, ...) that ``-v voice+variant`` accepts, sorted.

    Variants whose file name holds a space (``Mr serious``) are left out: ``-v`` cannot name them.
    """
    names = set()
    for fields in _run_list("--voices=variant"):
        if len(fields) < 5 or not fields[4].startswith("!v/"):
            continue
        if not _OTHER_LANGUAGES.fullmatch(" ".join(fields[5:])):  # the file name went on past a space
            continue
        names.add(fields[4][3:])
    return tuple(sorted(names))


class EspeakSynthesizer(EngineSynthesizer):
    """espeak-ng voices with all their variants; rate and pitch native. See the module docstring."""

    name = "espeak"

    def available(self) -> Availability:
        """Installed when the ``espeak-ng`` program is (``apt-get install espeak-ng``)."""
        if _binary() is None:
            return Availability(False, f"{ESPEAK} not found: apt-get install espeak-ng")
        return Availability(True)

    def base_voices(self, lang: str | None = None) -> list[str]:
        """Voices without variants (``en-us``, ``en-gb``, ...) for ``lang``, sorted."""
        return [v for v in self.voices(lang) if "+" not in v]

    @functools.cached_property
    def _table(self) -> dict[str, str]:
        variants = list_variants()
        table: dict[str, str] = {}
        for voice, lang in list_voices().items():
            table[voice] = lang
            for variant in variants:
                table[f"{voice}+{variant}"] = lang
        return table

    def _voice_languages(self) -> dict[str, str]:
        return self._table

    def native_controls(self, voice: str) -> frozenset[str]:
        """Both: ``-s`` words per minute and ``-p`` pitch."""
        return frozenset({"rate", "pitch"})

    def _render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        return espeak_wave(text, voice, int(round(DEFAULT_WPM * rate)), espeak_pitch(pitch))
