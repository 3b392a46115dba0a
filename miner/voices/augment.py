"""A seeded acoustic augmentation chain for 16 kHz float32 speech, with a record that reproduces it.

Steps, in this order, each applied with its probability (``AugmentConfig``; defaults in brackets):

==========  ======  ====================================================================================
step        p       what (range drawn uniformly)
==========  ======  ====================================================================================
speed       0.5     resampling, duration and pitch change together: factor 0.85-1.15
pitch       0.3     pitch shift keeping the duration (resample + WSOLA, :mod:`miner.voices.dsp`): -3..+3
                    semitones; formants move with the pitch
reverb      0.3     convolution with a synthetic room impulse response: direct sound, 4-10 early
                    reflections (2-40 ms), an exponentially decaying noise tail from 10 ms; RT60 0.15-0.9 s,
                    direct-to-reverberant ratio 0-12 dB; output RMS matched to the input's
noise       0.5     white, pink (1/f power) or babble (5 copies of the clip itself, circularly shifted,
                    half of them time-reversed) at an SNR of 5-30 dB over the whole clip
telephone   0.1     8 kHz round trip with G.711 mu-law (8-bit) companding and a 300-3400 Hz band-pass
codec       0.2     lossy round trip through libsndfile: Vorbis (quality level 0.3-0.9), Opus (0.4-0.9) or
                    MP3 (0.3-0.9), among those this libsndfile writes
gain        0.5     -18..+6 dB
==========  ======  ====================================================================================

Finally the clip is peak-limited (one gain for the whole clip, so that max |x| <= 0.98): output float32,
16 kHz, finite, never clipped. Only speed changes the length (to round(n / factor)).

Determinism: :func:`augment` draws every step's probability check and parameters from
``np.random.default_rng(seed)`` in a fixed order (whether or not the step runs, so changing one probability
never moves another step's draw); noise and reverb take their own sub-seed from the same stream. The
returned :class:`AugmentRecord` holds every applied parameter, rounded as drawn, so
``apply_record(audio, record)`` -- or ``apply_record(audio, AugmentRecord.from_string(s))`` from a manifest
cell -- gives the same samples bit for bit on the same machine and libraries.

Speed on one core (``bench/bench_voices.py``: 5 s clips, default probabilities, other jobs running): about
140x real time on average; the codec (Opus ~35x alone, Vorbis and MP3 ~110x) and pitch (~150x) steps cost
most.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

from miner.types import SAMPLE_RATE
from miner.voices import dsp

__all__ = [
    "CODECS",
    "AugmentConfig",
    "AugmentRecord",
    "add_noise",
    "apply_record",
    "augment",
    "available_codecs",
    "codec_round_trip",
    "draw_record",
    "gain",
    "make_noise",
    "reverb",
    "room_impulse_response",
    "telephone",
]

# codec name -> (libsndfile format, subtype, compression-level range drawn from)
CODECS: dict[str, tuple[str, str, tuple[float, float]]] = {
    "vorbis": ("OGG", "VORBIS", (0.3, 0.9)),
    "opus": ("OGG", "OPUS", (0.4, 0.9)),
    "mp3": ("MP3", "MPEG_LAYER_III", (0.3, 0.9)),
}
NOISE_KINDS = ("white", "pink", "babble")
PEAK = 0.98


def available_codecs() -> tuple[str, ...]:
    """The names of ``CODECS`` this libsndfile can write (Opus needs >= 1.0.29, MP3 >= 1.1)."""
    formats = sf.available_formats()
    out = []
    for name, (fmt, subtype, _) in CODECS.items():
        if fmt in formats and subtype in sf.available_subtypes(fmt):
            out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each step (see the module docstring)."""

    p_speed: float = 0.5
    speed: tuple[float, float] = (0.85, 1.15)
    p_pitch: float = 0.3
    pitch_semitones: tuple[float, float] = (-3.0, 3.0)
    p_reverb: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.9)
    drr_db: tuple[float, float] = (0.0, 12.0)
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    p_telephone: float = 0.1
    p_codec: float = 0.2
    codecs: tuple[str, ...] = field(default_factory=available_codecs)
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-18.0, 6.0)

    def __post_init__(self) -> None:
        for name in ("p_speed", "p_pitch", "p_reverb", "p_noise", "p_telephone", "p_codec", "p_gain"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name}={value} must be a probability in [0, 1]")
        unknown = [k for k in self.noise_kinds if k not in NOISE_KINDS]
        if unknown or not self.noise_kinds:
            raise ValueError(f"noise_kinds {self.noise_kinds} must be a non-empty subset of {NOISE_KINDS}")
        unknown = [c for c in self.codecs if c not in CODECS]
        if unknown:
            raise ValueError(f"unknown codecs {unknown}; known: {sorted(CODECS)}")
        if self.speed[0] <= 0:
            raise ValueError(f"speed range {self.speed} must be > 0")


@dataclass(frozen=True)
class AugmentRecord:
    """What one augmentation applied; ``None`` / ``False`` = step not applied.

    Attributes:
        speed: resampling factor (> 1 = faster, shorter).
        pitch: semitones.
        reverb: ``(rt60 seconds, direct-to-reverberant dB, impulse-response seed)``.
        noise: ``(kind, SNR dB, noise seed)``.
        telephone: the telephone channel was applied.
        codec: ``(codec name, libsndfile compression level)``.
        gain: dB.
    """

    speed: float | None = None
    pitch: float | None = None
    reverb: tuple[float, float, int] | None = None
    noise: tuple[str, float, int] | None = None
    telephone: bool = False
    codec: tuple[str, float] | None = None
    gain: float | None = None

    def as_string(self) -> str:
        """One manifest cell, e.g. ``speed=1.070;noise=pink@18.0dB#812;reverb=rt60 0.42 drr 6.1#77``; ``none``."""
        parts = []
        if self.speed is not None:
            parts.append(f"speed={self.speed:.3f}")
        if self.pitch is not None:
            parts.append(f"pitch={self.pitch:+.2f}st")
        if self.reverb is not None:
            rt60, drr, seed = self.reverb
            parts.append(f"reverb=rt60 {rt60:.2f} drr {drr:.1f}#{seed}")
        if self.noise is not None:
            kind, snr, seed = self.noise
            parts.append(f"noise={kind}@{snr:.1f}dB#{seed}")
        if self.telephone:
            parts.append("telephone")
        if self.codec is not None:
            parts.append(f"codec={self.codec[0]}@{self.codec[1]:.2f}")
        if self.gain is not None:
            parts.append(f"gain={self.gain:+.1f}dB")
        return ";".join(parts) or "none"

    __str__ = as_string

    @classmethod
    def from_string(cls, text: str) -> AugmentRecord:
        """Parse :meth:`as_string`'s output (an empty cell or ``none`` is the empty record).

        Raises:
            ValueError: a part that is not one of the forms ``as_string`` writes.
        """
        out: dict[str, Any] = {}
        text = text.strip()
        if text in ("", "none"):
            return cls()
        for part in text.split(";"):
            m = _parse_part(part.strip())
            if m is None:
                raise ValueError(f"cannot read augmentation step {part!r} in {text!r}")
            out.update(m)
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        """Applied steps only, JSON-ready (tuples as lists)."""
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
            if v not in (None, False)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentRecord:
        """Inverse of :meth:`to_dict`."""
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kw)


_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"speed=([0-9.]+)$"), lambda m: {"speed": float(m[1])}),
    (re.compile(r"pitch=([+-][0-9.]+)st$"), lambda m: {"pitch": float(m[1])}),
    (
        re.compile(r"reverb=rt60 ([0-9.]+) drr ([+-]?[0-9.]+)#(\d+)$"),
        lambda m: {"reverb": (float(m[1]), float(m[2]), int(m[3]))},
    ),
    (
        re.compile(r"noise=(\w+)@([+-]?[0-9.]+)dB#(\d+)$"),
        lambda m: {"noise": (m[1], float(m[2]), int(m[3]))},
    ),
    (re.compile(r"telephone$"), lambda m: {"telephone": True}),
    (re.compile(r"codec=(\w+)@([0-9.]+)$"), lambda m: {"codec": (m[1], float(m[2]))}),
    (re.compile(r"gain=([+-][0-9.]+)dB$"), lambda m: {"gain": float(m[1])}),
]


def _parse_part(part: str) -> dict[str, Any] | None:
    for pattern, build in _PATTERNS:
        m = pattern.match(part)
        if m:
            return dict(build(m))
    return None


def draw_record(seed: int, config: AugmentConfig | None = None) -> AugmentRecord:
    """The steps and parameters :func:`augment` applies for ``seed`` (they do not depend on the audio).

    Every draw happens in a fixed order whether or not its step runs; values are rounded as the record
    prints them, so the record's string form reproduces the chain exactly.
    """
    cfg = config or AugmentConfig()
    rng = np.random.default_rng(seed)

    def uniform(lo_hi: tuple[float, float], digits: int) -> float:
        return round(float(rng.uniform(*lo_hi)), digits)

    def subseed() -> int:
        return int(rng.integers(0, 2**31 - 1))

    u = rng.random(7)
    speed = uniform(cfg.speed, 3)
    semitones = uniform(cfg.pitch_semitones, 2)
    rt60, drr, reverb_seed = uniform(cfg.rt60, 2), uniform(cfg.drr_db, 1), subseed()
    kind = cfg.noise_kinds[int(rng.integers(len(cfg.noise_kinds)))]
    snr, noise_seed = uniform(cfg.snr_db, 1), subseed()
    codec_i, codec_u = int(rng.integers(max(1, len(cfg.codecs)))), float(rng.random())
    gain_db = uniform(cfg.gain_db, 1)
    codec: tuple[str, float] | None = None
    if u[5] < cfg.p_codec and cfg.codecs:
        name = cfg.codecs[codec_i]
        lo, hi = CODECS[name][2]
        codec = (name, round(lo + (hi - lo) * codec_u, 2))
    return AugmentRecord(
        speed=speed if u[0] < cfg.p_speed and speed != 1.0 else None,
        pitch=semitones if u[1] < cfg.p_pitch and semitones != 0.0 else None,
        reverb=(rt60, drr, reverb_seed) if u[2] < cfg.p_reverb else None,
        noise=(kind, snr, noise_seed) if u[3] < cfg.p_noise else None,
        telephone=bool(u[4] < cfg.p_telephone),
        codec=codec,
        gain=gain_db if u[6] < cfg.p_gain else None,
    )


def augment(
    audio: np.ndarray, seed: int, config: AugmentConfig | None = None
) -> tuple[np.ndarray, AugmentRecord]:
    """Apply the chain drawn for ``seed`` to one clip.

    Args:
        audio: float32 (n,) at 16 kHz.
        seed: any int; the same seed gives the same steps, parameters and samples.
        config: probabilities and ranges; default ``AugmentConfig()``.

    Returns:
        ``(augmented float32 (m,) at 16 kHz, finite, |x| <= 0.98; m = n unless speed ran, record)``.
    """
    record = draw_record(seed, config)
    return apply_record(audio, record), record


def apply_record(audio: np.ndarray, record: AugmentRecord) -> np.ndarray:
    """Apply exactly the steps of ``record`` (from :func:`augment` or ``AugmentRecord.from_string``).

    Returns:
        float32 (m,) at 16 kHz, finite, peak-limited to 0.98.

    Raises:
        ValueError: ``audio`` is not 1-D, or the record names an unknown noise kind or codec.
    """
    x = dsp.to_mono(np.asarray(audio))
    if x.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n,), got {x.shape}")
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if record.speed is not None:
        x = dsp.change_speed(x, record.speed)
    if record.pitch is not None:
        x = dsp.pitch_shift(x, record.pitch)
    if record.reverb is not None:
        x = reverb(x, *record.reverb)
    if record.noise is not None:
        x = add_noise(x, *record.noise)
    if record.telephone:
        x = telephone(x)
    if record.codec is not None:
        x = codec_round_trip(x, *record.codec)
    if record.gain is not None:
        x = gain(x, record.gain)
    return dsp.peak_limit(x, PEAK)


# --- the steps: each a pure function of the audio and its parameters ---------------------------------------


def _fft_filter(x: np.ndarray, response: Any, sample_rate: int) -> np.ndarray:
    """Zero-phase filtering of float32 (n,) by ``response(freqs_hz) -> gains`` (zero-padded, no wrap-around)."""
    n = len(x)
    size = 1 << int(np.ceil(np.log2(max(2, 2 * n))))
    spec = np.fft.rfft(x.astype(np.float64), size)
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    return np.fft.irfft(spec * response(freqs), size)[:n].astype(np.float32)


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution of (n,) by (k,), first n samples (the tail past the clip is cut)."""
    n = len(x)
    size = 1 << int(np.ceil(np.log2(n + len(h))))
    y = np.fft.irfft(np.fft.rfft(x.astype(np.float64), size) * np.fft.rfft(h.astype(np.float64), size), size)
    return y[:n].astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64))))) if x.size else 0.0


def make_noise(kind: str, n: int, seed: int, source: np.ndarray | None = None) -> np.ndarray:
    """Unit-RMS noise of ``kind`` (white, pink, babble), float32 (n,).

    ``babble`` mixes 5 copies of ``source`` (the clip itself), each circularly shifted by a random offset,
    every second one time-reversed; without a source (or a silent one) it falls back to pink noise.
    """
    rng = np.random.default_rng(seed)
    if kind == "white":
        noise = rng.standard_normal(n)
    elif kind == "pink":
        size = 1 << int(np.ceil(np.log2(max(2, n))))
        spec = np.fft.rfft(rng.standard_normal(size))
        freqs = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
        spec /= np.sqrt(np.maximum(freqs, 20.0))  # 1/f power, flat below 20 Hz
        spec[0] = 0.0
        noise = np.fft.irfft(spec, size)[:n]
    elif kind == "babble":
        if source is None or len(source) != n or _rms(source) == 0.0:
            return make_noise("pink", n, seed)
        src = source.astype(np.float64)
        noise = np.zeros(n)
        for i in range(5):
            copy = np.roll(src, int(rng.integers(n)))
            noise += copy[::-1] if i % 2 else copy
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    rms = float(np.sqrt(np.mean(noise**2)))
    return (noise / rms if rms > 0 else noise).astype(np.float32)


def add_noise(audio: np.ndarray, kind: str, snr_db: float, seed: int) -> np.ndarray:
    """Add ``kind`` noise so that power(audio) / power(noise) = ``snr_db`` over the whole clip (silences
    included). A silent clip comes back unchanged. float32 (n,) -> float32 (n,)."""
    x = np.asarray(audio, dtype=np.float32)
    power = float(np.mean(np.square(x.astype(np.float64)))) if x.size else 0.0
    if power == 0.0:
        return x.copy()
    noise = make_noise(kind, len(x), seed, source=x)
    scale = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (x + scale * noise).astype(np.float32)


def room_impulse_response(
    rt60: float, drr_db: float, seed: int, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """A synthetic room impulse response, float32 (k,), k = min(rt60, 1 s) x sample_rate.

    Direct sound 1.0 at t=0; 4-10 early reflections at 2-40 ms (random sign, 2-7 times the tail's local
    standard deviation); a Gaussian-noise tail from 10 ms (15 ms fade-in) under the envelope exp(-6.91 t / rt60)
    (-60 dB at ``rt60``), scaled so that direct energy / everything else = ``drr_db``.
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be > 0 seconds, got {rt60}")
    rng = np.random.default_rng(seed)
    n = max(int(min(rt60, 1.0) * sample_rate), int(0.05 * sample_rate))
    t = np.arange(n) / sample_rate
    envelope = np.exp(-6.908 * t / rt60)
    tail = rng.standard_normal(n) * envelope
    tail *= np.clip((t - 0.010) / 0.015, 0.0, 1.0)
    for _ in range(int(rng.integers(4, 11))):
        k = int(rng.uniform(0.002, 0.040) * sample_rate)
        tail[k] += rng.choice((-1.0, 1.0)) * rng.uniform(0.2, 0.7) * envelope[k] * 10.0
    tail[0] = 0.0
    energy = float(np.sum(tail**2))
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / energy) if energy > 0 else 0.0
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverb(audio: np.ndarray, rt60: float, drr_db: float, seed: int) -> np.ndarray:
    """Convolve with :func:`room_impulse_response`; same length (the tail past the end is cut) and RMS."""
    x = np.asarray(audio, dtype=np.float32)
    if not x.size:
        return x.copy()
    y = _fft_convolve(x, room_impulse_response(rt60, drr_db, seed))
    before, after = _rms(x), _rms(y)
    return (y * (before / after) if after > 0 else y).astype(np.float32)


def _mu_law(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """G.711-style mu-law companding with 8-bit quantization, float in [-1, 1] -> float."""
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    y = np.round(y * 127.0) / 127.0
    return np.sign(y) * ((1.0 + mu) ** np.abs(y) - 1.0) / mu


def _band(low: float, high: float, width: float) -> Any:
    """Gain response 1 in [low, high - width], 0 below low - width and above high, raised-cosine edges."""

    def response(f: np.ndarray) -> np.ndarray:
        up = np.clip((f - (low - width)) / width, 0.0, 1.0)
        down = np.clip((high - f) / width, 0.0, 1.0)
        return (0.5 - 0.5 * np.cos(np.pi * up)) * (0.5 - 0.5 * np.cos(np.pi * down))

    return response


def telephone(audio: np.ndarray) -> np.ndarray:
    """A narrow-band telephone channel: 16 kHz -> 8 kHz, mu-law 8-bit, 300-3400 Hz band-pass, -> 16 kHz.

    The band-pass passes 300-3200 Hz and is zero from 3400 Hz (and below 200 Hz). float32 (n,) -> (n,).
    """
    x = np.asarray(audio, dtype=np.float32)
    if not x.size:
        return x.copy()
    narrow = dsp.resample(x, SAMPLE_RATE, 8000)
    narrow = _mu_law(narrow).astype(np.float32)
    narrow = _fft_filter(narrow, _band(300.0, 3400.0, 200.0), 8000)
    wide = dsp.resample(narrow, 8000, SAMPLE_RATE)
    # soxr's upsampling leaves a faint image above 4 kHz: filter once more at 16 kHz
    wide = _fft_filter(wide, _band(300.0, 3400.0, 200.0), SAMPLE_RATE)
    return dsp.fit_length(wide, len(x))


def codec_round_trip(audio: np.ndarray, codec: str, level: float) -> np.ndarray:
    """Encode with ``codec`` (a ``CODECS`` name) at libsndfile compression ``level`` (0 best - 1 smallest) in
    memory, decode, and return float32 (n,) of the input's length.

    Raises:
        ValueError: unknown codec, or one this libsndfile cannot write.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    if codec not in available_codecs():
        raise ValueError(f"this libsndfile cannot write {codec}; available: {available_codecs()}")
    fmt, subtype, _ = CODECS[codec]
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    if not x.size:
        return x.copy()
    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format=fmt, subtype=subtype, compression_level=level)
    buf.seek(0)
    y, sr = sf.read(buf, dtype="float32")
    if y.ndim > 1:
        y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        y = dsp.resample(y, sr, SAMPLE_RATE)
    return dsp.fit_length(y.astype(np.float32), len(x))


def gain(audio: np.ndarray, db: float) -> np.ndarray:
    """Multiply by 10^(db/20); float32 (n,) -> (n,) (no limiting here)."""
    return (np.asarray(audio, dtype=np.float32) * np.float32(10.0 ** (db / 20.0))).astype(np.float32)
