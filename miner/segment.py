"""Speech segments: silero-vad speech regions, stopes-style candidate windows, and Segment records.

Long recordings are over-segmented as in stopes: every run of consecutive speech regions whose span is within
[min_seconds, max_seconds] becomes a candidate, so the miner can pick whichever span aligns best (the
one-to-one step later forbids two accepted segments that overlap in time).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from miner.types import SAMPLE_RATE, Segment, seconds_to_samples

logger = logging.getLogger(__name__)

__all__ = ["candidate_windows", "cut", "segment_recording", "vad_regions"]

Region = tuple[float, float]

# Float slack for span comparisons, so that e.g. a 0.1 + 0.2 s span still counts as 0.3 s.
_EPS = 1e-6
# The silero JIT model keeps recurrent state between chunks: one call at a time.
_VAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _vad_model() -> tuple[Any, Any]:
    """Load silero-vad's TorchScript model from the weights shipped inside the package (no download).

    Returns:
        ``(model, get_speech_timestamps)``.
    """
    import torch

    threads = torch.get_num_threads()
    # Importing silero_vad runs torch.set_num_threads(1): undo that process-wide side effect.
    from silero_vad import get_speech_timestamps, load_silero_vad

    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # silero's loader uses deprecated importlib / torch.jit.load APIs
        warnings.simplefilter("ignore", DeprecationWarning)
        model = load_silero_vad(onnx=False)  # JIT: runs on the torch CPU build, needs no onnxruntime
    logger.info("loaded silero-vad (TorchScript, CPU)")
    return model, get_speech_timestamps


def _check_wav(wav: np.ndarray) -> np.ndarray:
    if not isinstance(wav, np.ndarray) or wav.ndim != 1 or not np.issubdtype(wav.dtype, np.floating):
        shape = getattr(wav, "shape", None)
        dtype = getattr(wav, "dtype", type(wav).__name__)
        raise ValueError(
            f"expected float32 mono samples of shape (n,), got shape {shape} dtype {dtype}: "
            "decode with miner.audio.load_audio first."
        )
    return np.ascontiguousarray(wav, dtype=np.float32)


def vad_regions(
    wav: np.ndarray,
    *,
    threshold: float = 0.5,
    min_speech_seconds: float = 0.25,
    min_silence_seconds: float = 0.1,
) -> list[Region]:
    """Find speech regions with silero-vad.

    Args:
        wav: float32 samples of shape (n,) at 16 kHz (as :func:`miner.audio.load_audio` returns).
        threshold: speech probability above which a 32 ms frame counts as speech, in (0, 1).
        min_speech_seconds: drop speech regions shorter than this.
        min_silence_seconds: a pause must last this long to end a region.

    Returns:
        ``(start, end)`` in seconds, sorted and non-overlapping; empty when there is no speech.

    Raises:
        ValueError: ``wav`` is not 1-D float, or a parameter is out of range.
    """
    wav = _check_wav(wav)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if min_speech_seconds < 0 or min_silence_seconds < 0:
        raise ValueError(
            f"min_speech_seconds and min_silence_seconds must be >= 0, got "
            f"{min_speech_seconds!r} and {min_silence_seconds!r}"
        )
    if wav.shape[0] == 0:
        return []
    import torch

    model, get_speech_timestamps = _vad_model()
    with _VAD_LOCK, torch.inference_mode():
        stamps = get_speech_timestamps(
            torch.from_numpy(wav),
            model,
            threshold=threshold,
            sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=round(min_speech_seconds * 1000),
            min_silence_duration_ms=round(min_silence_seconds * 1000),
            return_seconds=False,  # samples: finer than silero's 0.1 s rounding of seconds
        )
    total = wav.shape[0]
    regions = [(s["start"] / SAMPLE_RATE, min(s["end"], total) / SAMPLE_RATE) for s in stamps]
    return [(a, b) for a, b in regions if b > a]


def _split_long(start: float, end: float, max_seconds: float) -> list[Region]:
    """Cut ``[start, end)`` into ceil(length / max_seconds) equal pieces of at most ``max_seconds``."""
    pieces = math.ceil((end - start) / max_seconds - _EPS)
    step = (end - start) / pieces
    bounds = [start + i * step for i in range(pieces)] + [end]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def candidate_windows(
    regions: Sequence[Region],
    *,
    min_seconds: float = 1.0,
    max_seconds: float = 20.0,
    max_pause_seconds: float = 2.0,
) -> list[Region]:
    """Over-segment speech regions into candidate windows (stopes-style).

    Every run of consecutive regions ``regions[i..j]`` whose span (``regions[i]`` start to ``regions[j]``
    end) lies within ``[min_seconds, max_seconds]`` gives one window, unless a pause inside the run (gap
    between neighbouring regions) is longer than ``max_pause_seconds``. Windows overlap by design.

    A single region longer than ``max_seconds`` is first cut into ``ceil(length / max_seconds)`` pieces of
    equal length (each at most ``max_seconds`` and more than half of it, so no useless short tail is left);
    the pieces then act as regions separated by no pause.

    Args:
        regions: ``(start, end)`` seconds, in any order, not overlapping (as :func:`vad_regions` returns).
        min_seconds: shortest window, > 0.
        max_seconds: longest window, >= ``min_seconds``.
        max_pause_seconds: longest pause a window may contain, >= 0.

    Returns:
        ``(start, end)`` windows sorted by start, then end; no duplicates.

    Raises:
        ValueError: a region with ``end <= start`` or ``start < 0``, overlapping regions, or bad limits.
    """
    if not 0 < min_seconds <= max_seconds or not math.isfinite(max_seconds):
        raise ValueError(
            f"need 0 < min_seconds <= max_seconds < inf, got min_seconds={min_seconds!r}, "
            f"max_seconds={max_seconds!r}"
        )
    if max_pause_seconds < 0:
        raise ValueError(f"max_pause_seconds must be >= 0, got {max_pause_seconds!r}")
    ordered = sorted((float(a), float(b)) for a, b in regions)
    pieces: list[Region] = []
    for start, end in ordered:
        if start < 0 or not end > start:
            raise ValueError(f"region ({start}, {end}) is invalid: need 0 <= start < end (seconds)")
        if pieces and start < pieces[-1][1] - _EPS:
            raise ValueError(
                f"regions {pieces[-1]} and ({start}, {end}) overlap: merge them first "
                "(vad_regions never returns overlapping regions)"
            )
        if end - start > max_seconds + _EPS:
            pieces.extend(_split_long(start, end, max_seconds))
        else:
            pieces.append((start, end))

    windows: list[Region] = []
    for i, (first_start, _) in enumerate(pieces):
        for j in range(i, len(pieces)):
            if j > i and pieces[j][0] - pieces[j - 1][1] > max_pause_seconds + _EPS:
                break
            span = pieces[j][1] - first_start
            if span > max_seconds + _EPS:
                break  # spans only grow with j
            if span >= min_seconds - _EPS:
                windows.append((first_start, pieces[j][1]))
    return sorted(set(windows))


def segment_recording(
    recording_id: str,
    path: str | Path,
    wav: np.ndarray,
    *,
    mode: Literal["file", "vad"],
    min_seconds: float = 1.0,
    max_seconds: float = 20.0,
    max_pause_seconds: float = 2.0,
    lang: str | None = None,
    vad_threshold: float = 0.5,
) -> list[Segment]:
    """Turn one decoded recording into :class:`miner.types.Segment` records.

    Args:
        recording_id: the recording's stable id; segment ids are ``f"{recording_id}@{start:.2f}-{end:.2f}"``.
        path: the recording's path, copied into each segment.
        wav: float32 samples of shape (n,) at 16 kHz.
        mode: ``"file"``: one segment for the whole recording (corpora of short utterances);
            ``"vad"``: silero-vad regions, then :func:`candidate_windows` (long recordings).
        min_seconds, max_seconds, max_pause_seconds: window limits for ``"vad"`` (see
            :func:`candidate_windows`); ``"file"`` only logs a warning above ``max_seconds``.
        lang: language code copied into each segment.
        vad_threshold: silero-vad speech probability threshold.

    Returns:
        Segments sorted by start then end, start and duration rounded to the millisecond; empty when
        ``"vad"`` finds no speech window.

    Raises:
        ValueError: unknown ``mode``, ``wav`` not 1-D float, or ``"file"`` mode on an empty ``wav``.
    """
    wav = _check_wav(wav)
    total = wav.shape[0] / SAMPLE_RATE
    if mode == "file":
        if wav.shape[0] == 0:
            raise ValueError(f"recording {recording_id!r} has no samples: nothing to segment.")
        if total > max_seconds:
            logger.warning(
                "recording %s lasts %.1f s, over max_seconds=%g, kept whole: use mode='vad' to split it",
                recording_id,
                total,
                max_seconds,
            )
        windows = [(0.0, total)]
    elif mode == "vad":
        regions = vad_regions(wav, threshold=vad_threshold)
        windows = candidate_windows(
            regions, min_seconds=min_seconds, max_seconds=max_seconds, max_pause_seconds=max_pause_seconds
        )
        logger.debug("%s: %d speech regions -> %d windows", recording_id, len(regions), len(windows))
    else:
        raise ValueError(f"mode must be 'file' or 'vad', got {mode!r}")

    segments: dict[str, Segment] = {}
    for start, end in windows:
        start_r, end_r = round(start, 3), round(end, 3)
        seg_id = f"{recording_id}@{start_r:.2f}-{end_r:.2f}"
        # Two windows rounding to one id would be near-identical spans: keep the first.
        segments.setdefault(
            seg_id,
            Segment(
                id=seg_id,
                recording_id=recording_id,
                path=str(path),
                start=start_r,
                duration=round(end_r - start_r, 3),
                lang=lang,
            ),
        )
    return list(segments.values())


def cut(wav: np.ndarray, start: float, duration: float) -> np.ndarray:
    """Slice ``duration`` seconds from ``start`` seconds (sample counts from :func:`seconds_to_samples`).

    An end up to 10 ms past the last sample (rounding of stored times) is clamped to it.

    Args:
        wav: samples of shape (n,) or (n, channels) at 16 kHz.
        start: offset in seconds, >= 0.
        duration: length in seconds, > 0.

    Returns:
        A view of ``wav`` (no copy) with ``seconds_to_samples(duration)`` rows, fewer only when clamped.

    Raises:
        ValueError: negative start, non-positive duration, or a span that ends past the audio.
    """
    if start < 0 or not duration > 0:
        raise ValueError(
            f"need start >= 0 and duration > 0 seconds, got start={start!r}, duration={duration!r}"
        )
    first = seconds_to_samples(start)
    last = first + seconds_to_samples(duration)
    n = wav.shape[0]
    if first >= n or last > n + seconds_to_samples(0.01):
        raise ValueError(
            f"span {start:.3f}+{duration:.3f} s runs past the audio ({n / SAMPLE_RATE:.3f} s): "
            "the segment belongs to another or a shorter recording."
        )
    return wav[first : min(last, n)]
