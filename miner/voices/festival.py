"""Festival (diphone, cluster-unit and HTS voices) through ``text2wave``, from Debian's ``festival`` and
``festvox-*`` packages.

Voices are Festival's own names, found under ``/usr/share/festival/voices/<language>/<voice>/`` (the Debian
packages ``festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-italp16k festvox-itapc16k
festvox-ru`` give): English ``kal_diphone``, ``ked_diphone`` (American men, diphones),
``cmu_us_slt_arctic_hts`` (American woman, HTS); Italian ``lp_diphone`` (woman), ``pc_diphone`` (man);
Russian ``msu_ru_nsh_clunits`` (man, cluster units).

Text encoding: the English and Italian voices read 8-bit text (Italian accented letters as Latin-1; UTF-8
makes their letter-to-sound rules fail and the clip comes out empty), the Russian voice reads UTF-8 (KOI8-R
and CP1251 fail). Text is normalised first: typographic quotes and dashes to ASCII, and for English any
accent dropped (NFKD), for Italian any character outside Latin-1 likewise; what still does not encode is
dropped.

Controls: diphone voices change rate (``Duration_Stretch``) and pitch (a hook that scales every F0 target
before waveform synthesis: x1.4 measured x1.39) natively; the HTS voice changes rate natively (hts_engine
``-r``) but ignores its ``-fm`` pitch option, so pitch is DSP; the Russian cluster-unit voice changes
neither (both DSP, :mod:`miner.voices.dsp`).

Diphone voices run at ``us_gain`` 0.5 instead of their 0.9 (which brought English sentences raised in pitch
near full scale); the Italian voices ignore it and still touch full scale on a few samples per sentence
(1-6 of 118,000 measured). ``text2wave`` returns 0 even when it fails, so its stderr is checked for ``SIOD ERROR``. Deterministic.
Measured speed (``bench/bench_voices.py``, one core, other jobs running, ~0.2-0.4 s of start-up per call
included): diphone voices 18-30x real time, the HTS voice 15x, the Russian voice 7-8x; 13-16 characters per
second of speech at rate 1.0.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import soundfile as sf

from miner.voices.base import Availability, EngineSynthesizer, SynthesisError

__all__ = ["TEXT2WAVE", "VOICE_ROOT", "FestivalSynthesizer", "festival_text", "list_voices"]

TEXT2WAVE = "/usr/bin/text2wave"
VOICE_ROOT = Path("/usr/share/festival/voices")
# Festival's voice folders name the language in words.
_LANG_DIRS = {
    "english": "en",
    "us": "en",
    "british": "en",
    "italian": "it",
    "russian": "ru",
    "spanish": "es",
    "czech": "cs",
    "finnish": "fi",
    "welsh": "cy",
}
_ENCODINGS = {
    "en": "ascii",
    "it": "latin-1",
    "es": "latin-1",
    "fi": "latin-1",
    "cy": "latin-1",
    "cs": "iso-8859-2",
}
_PUNCT = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u00a0": " ",
    }
)
_PITCH_HOOK = (
    '(set! after_analysis_hooks (list (lambda (utt) (mapcar (lambda (tg) (item.set_feat tg "f0" '
    '(* {factor} (item.feat tg "f0")))) (utt.relation.items utt \'Target)) utt)))'
)


def _binary() -> str | None:
    return TEXT2WAVE if Path(TEXT2WAVE).exists() else shutil.which("text2wave")


@functools.lru_cache(maxsize=1)
def list_voices() -> dict[str, str]:
    """Festival voices installed under ``VOICE_ROOT``: voice name -> language code (``kal_diphone`` -> ``en``)."""
    out: dict[str, str] = {}
    if not VOICE_ROOT.is_dir():
        return out
    for lang_dir in sorted(VOICE_ROOT.iterdir()):
        lang = _LANG_DIRS.get(lang_dir.name)
        if lang is None or not lang_dir.is_dir():
            continue
        for voice_dir in sorted(lang_dir.iterdir()):
            if (voice_dir / "festvox").is_dir():
                out[voice_dir.name] = lang
    return out


def festival_text(text: str, lang: str) -> bytes:
    """``text`` as bytes a Festival voice of ``lang`` reads (see the module docstring for the rules)."""
    encoding = _ENCODINGS.get(lang, "utf-8")
    text = unicodedata.normalize("NFC", text.translate(_PUNCT))
    if encoding == "utf-8":
        return text.encode("utf-8")
    kept = []
    for ch in text:
        try:
            ch.encode(encoding)
            kept.append(ch)
        except UnicodeEncodeError:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            kept.append(base.encode(encoding, errors="ignore").decode(encoding))
    return "".join(kept).encode(encoding)


def _kind(voice: str) -> str:
    """``diphone``, ``hts``, ``clunits`` or ``other``, from the voice name's suffix."""
    for kind in ("diphone", "hts", "clunits"):
        if voice.endswith("_" + kind):
            return kind
    return "other"


class FestivalSynthesizer(EngineSynthesizer):
    """Festival voices through ``text2wave`` (one process per call). See the module docstring."""

    name = "festival"

    def available(self) -> Availability:
        """Installed when ``text2wave`` and at least one voice are (``apt-get install festival festvox-...``)."""
        if _binary() is None:
            return Availability(False, f"{TEXT2WAVE} not found: apt-get install festival festvox-kallpc16k")
        if not list_voices():
            return Availability(
                False, f"no Festival voice under {VOICE_ROOT}: apt-get install festvox-kallpc16k"
            )
        return Availability(True)

    def _voice_languages(self) -> dict[str, str]:
        return list_voices()

    def native_controls(self, voice: str) -> frozenset[str]:
        """Diphone voices: rate and pitch; HTS: rate; cluster units and others: neither."""
        return {
            "diphone": frozenset({"rate", "pitch"}),
            "hts": frozenset({"rate"}),
        }.get(_kind(voice), frozenset())

    def _render(self, text: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        binary = _binary()
        if binary is None:
            raise SynthesisError(f"{TEXT2WAVE} not found: apt-get install festival")
        evals = [f"(voice_{voice})"]
        kind = _kind(voice)
        if kind == "diphone":
            evals.append("(set! us_gain 0.5)")  # headroom for the pitch hook
        if rate != 1.0 and kind == "hts":
            evals.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.4f}))))')
        elif rate != 1.0:
            evals.append(f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})")
        if pitch != 1.0:
            evals.append(_PITCH_HOOK.format(factor=f"{pitch:.4f}"))
        data = festival_text(text, list_voices()[voice])
        fd, tmp = tempfile.mkstemp(prefix="festival_", suffix=".wav")
        os.close(fd)
        try:
            cmd = [binary, "-o", tmp]
            for expr in evals:
                cmd += ["-eval", expr]
            try:
                proc = subprocess.run(cmd, input=data, capture_output=True, check=False, timeout=300)
            except subprocess.TimeoutExpired as exc:
                raise SynthesisError(f"festival {voice} timed out after 300 s on {text[:60]!r}") from exc
            err = proc.stderr.decode("utf-8", "replace")
            if proc.returncode != 0 or "SIOD ERROR" in err or os.path.getsize(tmp) <= 44:
                raise SynthesisError(
                    f"festival {voice} failed (rc={proc.returncode}) on {text[:60]!r}: {err.strip()[:300]}"
                )
            samples, sr = sf.read(tmp, dtype="float32")
        finally:
            os.unlink(tmp)
        return samples, int(sr)
