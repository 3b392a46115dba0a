"""Audio input: decode any format libsndfile reads, downmix to mono, resample to 16 kHz, refuse bad input.

Every failure raises one exception type, :class:`AudioError`, whose message names the problem and the fix, so
the CLI and the HTTP edge can report it as is (the API maps it to a 4xx).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from miner.types import SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLES",
    "MIN_SAMPLE_RATE",
    "AudioError",
    "AudioInfo",
    "check_sample_rate",
    "decoded_size_message",
    "iter_audio_files",
    "load_audio",
    "probe",
    "supported_formats",
    "too_short_message",
    "write_audio",
]

AudioSource = str | os.PathLike | bytes | bytearray | memoryview

# File suffix -> (libsndfile major format, subtype used when writing; None = libsndfile's default).
_SUFFIX_FORMATS: dict[str, tuple[str, str | None]] = {
    ".wav": ("WAV", None),
    ".wave": ("WAV", None),
    ".flac": ("FLAC", None),
    ".ogg": ("OGG", "VORBIS"),
    ".oga": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aif": ("AIFF", None),
    ".aiff": ("AIFF", None),
    ".au": ("AU", None),
    ".caf": ("CAF", None),
    ".w64": ("W64", None),
    ".rf64": ("RF64", None),
}

# MP3 needs libsndfile >= 1.1 and Opus >= 1.0.29: keep only what the installed library really has.
_AVAILABLE = sf.available_formats()
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    s for s, (fmt, _) in _SUFFIX_FORMATS.items() if fmt in _AVAILABLE
)

# libsndfile reports an unknown length as SF_COUNT_MAX; treat anything this large as "unknown".
_UNKNOWN_FRAMES = 2**62

# The shortest clip every speech encoder takes, after resampling to 16 kHz: Whisper's STFT (n_fft 400, reflect
# padding of 200) fails at 200 samples or fewer, and wav2vec2's convolutions need a 400-sample receptive field.
MIN_SAMPLES = 400  # 25 ms at 16 kHz

# Sample rates outside this range are not recordings (a header claiming 2147483647 Hz resamples to nothing).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000


class AudioError(ValueError):
    """Audio that cannot be used: missing, empty, undecodable, non-finite, too short or too long."""


class AudioTooLong(AudioError):
    """Audio longer than the configured maximum (a subclass, so callers such as the API can answer 413)."""


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says, read without decoding the samples.

    Attributes:
        duration: length in seconds (frames / sample_rate).
        sample_rate: samples per second per channel, as stored (before any resampling).
        channels: number of channels.
        format: libsndfile major format, e.g. ``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``.
        subtype: libsndfile subtype, e.g. ``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``, ``"OPUS"``.
        frames: samples per channel.
    """

    duration: float
    sample_rate: int
    channels: int
    format: str
    subtype: str
    frames: int


def supported_formats() -> str:
    """The containers/codecs the installed libsndfile decodes, human-readable (for error messages)."""
    names = [n for n in ("WAV", "FLAC", "AIFF", "AU", "CAF", "W64", "RF64") if n in _AVAILABLE]
    if "OGG" in _AVAILABLE:
        ogg = sf.available_subtypes("OGG")
        names += [f"OGG/{codec.title()}" for codec in ("VORBIS", "OPUS") if codec in ogg]
    if "MP3" in _AVAILABLE:
        names.append("MP3")
    return ", ".join(names) + f" (libsndfile {sf.__libsndfile_version__})"


def _describe(source: AudioSource) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes of uploaded audio>"
    return repr(os.fspath(source))


def _open(source: AudioSource) -> sf.SoundFile:
    """Open ``source`` for reading, turning every way it can fail into an :class:`AudioError`."""
    label = _describe(source)
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioError(
                f"{label} is empty (0 bytes): send the audio file's contents, not an empty body."
            )
        handle: str | io.BytesIO = io.BytesIO(bytes(source))
    else:
        path = Path(os.fspath(source))
        if not path.exists():
            raise AudioError(f"audio file {label} does not exist: check the path (relative to {Path.cwd()}).")
        if not path.is_file():
            raise AudioError(f"{label} is not a regular file: pass an audio file, not a directory.")
        if path.stat().st_size == 0:
            raise AudioError(f"audio file {label} is empty (0 bytes): re-export or re-download it.")
        handle = str(path)
    try:
        return sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        raise AudioError(
            f"cannot decode audio {label}: {reason}. Supported formats: {supported_formats()}. "
            "Convert it first, e.g. `ffmpeg -i INPUT -ac 1 -ar 16000 out.wav`."
        ) from exc


def probe(source: AudioSource) -> AudioInfo:
    """Read an audio file's header (duration, rate, channels, codec) without decoding its samples.

    Args:
        source: a path or the raw bytes of an audio file.

    Returns:
        The header as an :class:`AudioInfo`; ``duration`` is ``inf`` when libsndfile cannot tell the length.

    Raises:
        AudioError: missing, empty or unreadable file.
    """
    with _open(source) as f:
        frames = int(f.frames)
        duration = math.inf if frames >= _UNKNOWN_FRAMES else frames / f.samplerate
        return AudioInfo(
            duration=duration,
            sample_rate=int(f.samplerate),
            channels=int(f.channels),
            format=str(f.format),
            subtype=str(f.subtype),
            frames=frames,
        )


def load_audio(
    source: AudioSource,
    *,
    max_seconds: float | None = None,
    min_seconds: float = 0.0,
    max_samples: int | None = None,
) -> np.ndarray:
    """Decode audio to float32 mono 16 kHz samples in [-1, 1].

    Channels are averaged; other rates are resampled with soxr (quality ``"HQ"``); integer PCM is scaled to
    [-1, 1] by libsndfile and everything is clipped to [-1, 1] (float files and resampling can overshoot).
    A file longer than ``max_seconds`` is refused from its header, before any decoding; decoding also stops
    one block past the limit when the header cannot tell the length, so a huge upload costs little.

    Args:
        source: a path or the raw bytes of a WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3 (... see
            :func:`supported_formats`) file.
        max_seconds: refuse audio longer than this (``None``: no limit).
        min_seconds: refuse audio shorter than this.
        max_samples: refuse audio whose decoded size, frames x channels at the stored rate, exceeds this
            (from the header before decoding; a read never decodes more): what bounds memory, since a 59 s
            FLAC of 8 channels at 655,350 Hz is 338 kB on disk and 1.2 GB decoded.

    Returns:
        float32 array of shape (n,), sample rate :data:`miner.types.SAMPLE_RATE` (16000).

    Raises:
        AudioError: missing, empty (0 bytes), undecodable or unsupported file; no samples; NaN or infinite
            samples; a sample rate outside [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`]; fewer than
            :data:`MIN_SAMPLES` samples at 16 kHz; shorter than ``min_seconds``.
        AudioTooLong: longer than ``max_seconds``, or more than ``max_samples`` decoded samples.
        ValueError: ``min_seconds`` / ``max_seconds`` themselves are invalid.
    """
    if min_seconds < 0 or not math.isfinite(min_seconds):
        raise ValueError(f"min_seconds must be a finite number >= 0, got {min_seconds!r}")
    if max_seconds is not None and not (max_seconds > 0 and max_seconds >= min_seconds):
        raise ValueError(f"max_seconds must be > 0 and >= min_seconds={min_seconds}, got {max_seconds!r}")
    label = _describe(source)
    with _open(source) as f:
        sr, frames, channels = int(f.samplerate), int(f.frames), max(1, int(f.channels))
        if frames == 0:
            raise AudioError(f"audio {label} holds no samples (0 frames): send a recording with sound in it.")
        check_sample_rate(sr, label)
        known = frames < _UNKNOWN_FRAMES
        if known and max_samples is not None and frames * channels > max_samples:
            raise AudioTooLong(decoded_size_message(label, frames, sr, channels, max_samples))
        if known and max_seconds is not None and frames / sr > max_seconds:
            raise AudioTooLong(
                f"audio {label} lasts {frames / sr:.1f} s, over the limit of {max_seconds:g} s: cut it into "
                "shorter files or raise the limit (max_seconds / the server's audio-seconds setting)."
            )
        if known and frames / sr < min_seconds:
            raise AudioError(
                f"audio {label} lasts {frames / sr:.3f} s, under the minimum of {min_seconds:g} s: "
                "send a longer recording or lower min_seconds."
            )
        limit = -1 if max_seconds is None else math.floor(max_seconds * sr) + 1
        if max_samples is not None:
            cap = max_samples // channels + 1
            limit = cap if limit < 0 else min(limit, cap)
        try:
            data = f.read(frames=limit, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(
                f"audio {label} is corrupt ({exc}): re-export it, "
                "e.g. `ffmpeg -i INPUT -ac 1 -ar 16000 out.wav`."
            ) from exc
    n = data.shape[0]
    if n == 0:
        raise AudioError(
            f"audio {label} decoded to no samples: the file is truncated or corrupt; re-export it."
        )
    if max_samples is not None and n * channels > max_samples:  # the header did not tell the length
        raise AudioTooLong(decoded_size_message(label, None, sr, channels, max_samples))
    if max_seconds is not None and n / sr > max_seconds:
        raise AudioTooLong(
            f"audio {label} lasts more than the limit of {max_seconds:g} s: cut it into shorter files "
            "or raise the limit (max_seconds / the server's audio-seconds setting)."
        )
    if n / sr < min_seconds:  # the header may have promised more than the file holds
        raise AudioError(
            f"audio {label} lasts {n / sr:.3f} s, under the minimum of {min_seconds:g} s: "
            "send a longer recording or lower min_seconds."
        )
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        first = int(np.argwhere(~finite)[0, 0])
        raise AudioError(
            f"audio {label} has {bad} NaN or infinite sample(s), the first at {first / sr:.3f} s: "
            "the file is damaged; re-export it from the source recording."
        )
    wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sr != SAMPLE_RATE:
        wav = soxr.resample(wav, sr, SAMPLE_RATE, quality="HQ")
    wav = np.clip(wav, -1.0, 1.0).astype(np.float32, copy=False)
    if wav.shape[0] < MIN_SAMPLES:
        raise AudioError(too_short_message(label, wav.shape[0]))
    return np.ascontiguousarray(wav)


def check_sample_rate(sample_rate: int, label: str) -> None:
    """Refuse a sample rate no recording has (raises :class:`AudioError` naming the accepted range)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"audio {label} claims a sample rate of {sample_rate} Hz, outside {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz: the header is damaged; re-export it, e.g. "
            "`ffmpeg -i INPUT -ac 1 -ar 16000 out.wav`."
        )


def too_short_message(label: str, samples: int) -> str:
    """The error for a clip under :data:`MIN_SAMPLES` samples at 16 kHz."""
    return (
        f"audio {label} is too short: {samples} samples at {SAMPLE_RATE} Hz ({1000 * samples / SAMPLE_RATE:.1f} "
        f"ms); the minimum is {MIN_SAMPLES} samples ({1000 * MIN_SAMPLES / SAMPLE_RATE:g} ms): send a longer clip."
    )


def decoded_size_message(label: str, frames: int | None, sample_rate: int, channels: int, limit: int) -> str:
    """The error for audio whose decoded size (frames x channels) exceeds ``limit`` samples."""
    size = f"{frames} frames x {channels} channels" if frames is not None else f"more than {limit} samples"
    return (
        f"audio {label} decodes to {size} at {sample_rate} Hz, over the limit of {limit} decoded samples "
        "(sample rate x channels x seconds): send mono audio at 16 kHz, e.g. "
        "`ffmpeg -i INPUT -ac 1 -ar 16000 out.flac`."
    )


def iter_audio_files(root: str | os.PathLike) -> Iterator[Path]:
    """List audio files under ``root`` (recursively), in sorted order, keeping :data:`SUPPORTED_EXTENSIONS`.

    Suffixes match case-insensitively; hidden files and folders (name starting with ``.``) are skipped. A
    ``root`` that is itself a supported file yields just that file.

    Raises:
        AudioError: ``root`` does not exist (raised at the call, not at the first ``next``).
    """
    base = Path(os.fspath(root))
    if not base.exists():
        raise AudioError(f"audio root {str(base)!r} does not exist: check the path.")
    if base.is_file():
        return iter([base] if base.suffix.lower() in SUPPORTED_EXTENSIONS else [])

    def walk() -> Iterator[Path]:
        found = []
        for path in base.rglob("*"):
            rel = path.relative_to(base)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if path.suffix.lower() in SUPPORTED_EXTENSIONS and path.is_file():
                found.append(rel)
        for rel in sorted(found, key=lambda p: p.as_posix()):
            yield base / rel

    return walk()


def write_audio(path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write samples to ``path`` in the format its suffix names.

    ``.wav`` / ``.flac`` PCM_16, ``.ogg`` Vorbis, ``.opus`` Opus, ``.mp3`` MPEG layer III, ... Written to a
    temporary file then renamed, so a reader never sees half a file.

    Args:
        path: destination; its suffix must be one of :data:`SUPPORTED_EXTENSIONS`.
        wav: float samples of shape (n,) or (n, channels); values outside [-1, 1] are clipped (logged).
        sample_rate: samples per second (Opus accepts only 8000, 12000, 16000, 24000 and 48000).

    Returns:
        The path written.

    Raises:
        AudioError: unsupported suffix, NaN or infinite samples, or a rate/format libsndfile refuses.
    """
    dest = Path(os.fspath(path))
    suffix = dest.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise AudioError(
            f"cannot write {str(dest)!r}: unknown audio suffix {suffix!r}; use one of "
            f"{', '.join(sorted(SUPPORTED_EXTENSIONS))}."
        )
    fmt, subtype = _SUFFIX_FORMATS[suffix]
    data = np.asarray(wav, dtype=np.float32)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise AudioError(
            f"cannot write {str(dest)!r}: need samples of shape (n,) or (n, channels), got {data.shape}"
        )
    if not np.isfinite(data).all():
        raise AudioError(
            f"cannot write {str(dest)!r}: the samples hold NaN or infinite values; fix the input."
        )
    over = int(np.count_nonzero(np.abs(data) > 1.0))
    if over:
        logger.warning("write_audio %s: clipping %d sample(s) outside [-1, 1]", dest, over)
        data = np.clip(data, -1.0, 1.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), data, int(sample_rate), format=fmt, subtype=subtype)
        os.replace(tmp, dest)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"cannot write {str(dest)!r} at {sample_rate} Hz: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest
