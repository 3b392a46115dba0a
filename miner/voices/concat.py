"""Longer utterances from consecutive sentences of one document: join rendered clips, or plan the groups to
synthesize as one text.

Two ways to get multi-sentence training speech:

- render each sentence, then :func:`join_clips`: consecutive clips joined with random pauses (0.15-0.6 s of
  silence) into utterances of at most ``max_seconds``, texts joined with spaces, so the joins are exact and
  each sentence's start time is known;
- :func:`plan_groups` first (consecutive sentences grouped by seconds estimated from their length in
  characters), then synthesize each group's joined text at once: the engine's own sentence prosody and
  pauses, no per-sentence timing.

Both are deterministic for a seed. Speaking rates measured at rate 1.0 on open-domain sentences of 40-230
characters (``bench/bench_voices.py``): espeak-ng 18-23 characters per second of speech, Pico 14-18,
Festival 13-16, Piper 19. ``CHARS_PER_SECOND`` = 14 errs long for most voices, so planned groups rarely
overrun; at another rate pass ``chars_per_second=14 * rate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from miner.types import SAMPLE_RATE, seconds_to_samples

__all__ = [
    "CHARS_PER_SECOND",
    "JoinedClip",
    "estimate_seconds",
    "join_clips",
    "join_group",
    "plan_groups",
]

CHARS_PER_SECOND = 14.0


@dataclass(frozen=True)
class JoinedClip:
    """Consecutive clips joined into one utterance.

    Attributes:
        audio: float32 (n,) at 16 kHz.
        text: the clips' texts (stripped) joined with one space.
        indices: positions of the joined clips in the input, consecutive and increasing.
        starts: start time in seconds of each joined clip within ``audio``.
        pauses: seconds of silence after each clip but the last (len(indices) - 1 values).
    """

    audio: np.ndarray
    text: str
    indices: tuple[int, ...]
    starts: tuple[float, ...]
    pauses: tuple[float, ...]

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.audio) / SAMPLE_RATE


def join_group(audios: Sequence[np.ndarray], texts: Sequence[str], pauses: Sequence[float]) -> np.ndarray:
    """Clips (float32 (n_i,) at 16 kHz) with ``pauses[i]`` seconds of silence after clip i (rounded to samples by
    ``seconds_to_samples``); returns float32 (sum n_i + sum pause samples,)."""
    if len(pauses) != max(0, len(audios) - 1) or len(texts) != len(audios):
        raise ValueError(
            f"{len(audios)} clips need {len(audios)} texts and {max(0, len(audios) - 1)} pauses, "
            f"got {len(texts)} and {len(pauses)}"
        )
    parts: list[np.ndarray] = []
    for i, clip in enumerate(audios):
        parts.append(np.asarray(clip, dtype=np.float32))
        if i < len(pauses):
            parts.append(np.zeros(seconds_to_samples(pauses[i]), dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def join_clips(
    audios: Sequence[np.ndarray],
    texts: Sequence[str],
    *,
    seed: int,
    max_seconds: float = 25.0,
    pause_range: tuple[float, float] = (0.15, 0.6),
    max_clips: int | None = None,
) -> list[JoinedClip]:
    """Join consecutive clips of one document into utterances of at most ``max_seconds``.

    Greedy in order: a clip joins the current utterance when the utterance plus the pause before the clip
    plus the clip fit in ``max_seconds`` (and it holds fewer than ``max_clips``); otherwise it starts the next
    one. A clip longer than ``max_seconds`` on its own stays alone (and over the limit). Every clip is used
    once, in order.

    Args:
        audios: float32 (n_i,) clips at 16 kHz, in document order.
        texts: their texts.
        seed: draws the pauses (``np.random.default_rng(seed)``, one uniform draw per gap).
        max_seconds: longest joined utterance.
        pause_range: silence between two clips, seconds, uniform.
        max_clips: most clips per utterance (None: no limit).

    Returns:
        Joined utterances covering all clips, in order.
    """
    if len(audios) != len(texts):
        raise ValueError(f"{len(audios)} clips but {len(texts)} texts")
    if max_seconds <= 0 or (max_clips is not None and max_clips < 1):
        raise ValueError(f"max_seconds must be > 0 and max_clips >= 1, got {max_seconds}, {max_clips}")
    lo, hi = pause_range
    if not 0 <= lo <= hi:
        raise ValueError(f"pause_range {pause_range} must be 0 <= low <= high seconds")
    rng = np.random.default_rng(seed)
    gaps = [round(float(g), 4) for g in rng.uniform(lo, hi, size=max(0, len(audios) - 1))]
    limit = seconds_to_samples(max_seconds)
    groups: list[list[int]] = []
    length = 0
    for i, clip in enumerate(audios):
        n = len(clip)
        if groups:
            extra = seconds_to_samples(gaps[i - 1]) + n
            full = max_clips is not None and len(groups[-1]) >= max_clips
            if not full and length + extra <= limit:
                groups[-1].append(i)
                length += extra
                continue
        groups.append([i])
        length = n
    out = []
    for group in groups:
        pauses = [gaps[i] for i in group[:-1]]
        audio = join_group([audios[i] for i in group], [texts[i] for i in group], pauses)
        starts, t = [], 0
        for k, i in enumerate(group):
            starts.append(t / SAMPLE_RATE)
            t += len(audios[i]) + (seconds_to_samples(pauses[k]) if k < len(pauses) else 0)
        out.append(
            JoinedClip(
                audio=audio,
                text=" ".join(texts[i].strip() for i in group),
                indices=tuple(group),
                starts=tuple(starts),
                pauses=tuple(pauses),
            )
        )
    return out


def estimate_seconds(text: str, chars_per_second: float = CHARS_PER_SECOND) -> float:
    """Rough spoken duration of ``text`` at rate 1.0: its length in characters / ``chars_per_second``."""
    return len(text.strip()) / chars_per_second


def plan_groups(
    texts: Sequence[str],
    *,
    max_seconds: float = 25.0,
    sentences: tuple[int, int] = (1, 6),
    seed: int | None = None,
    chars_per_second: float = CHARS_PER_SECOND,
    pause_seconds: float = 0.375,
) -> list[list[int]]:
    """Group consecutive sentences of one document for synthesis as one text.

    Each group wants a number of sentences drawn from ``sentences`` (inclusive; the maximum when ``seed`` is
    None) and takes them while the estimated duration (:func:`estimate_seconds` per sentence plus
    ``pause_seconds`` between sentences) stays within ``max_seconds``; a sentence estimated longer than
    that alone makes a group of one.

    Returns:
        Lists of consecutive indices into ``texts``, covering all of them in order.
    """
    lo, hi = sentences
    if not 1 <= lo <= hi:
        raise ValueError(f"sentences={sentences} must be 1 <= min <= max")
    rng = np.random.default_rng(seed) if seed is not None else None
    groups: list[list[int]] = []
    i = 0
    while i < len(texts):
        want = int(rng.integers(lo, hi + 1)) if rng is not None else hi
        group = [i]
        seconds = estimate_seconds(texts[i], chars_per_second)
        while len(group) < want and i + len(group) < len(texts):
            extra = pause_seconds + estimate_seconds(texts[i + len(group)], chars_per_second)
            if seconds + extra > max_seconds:
                break
            group.append(i + len(group))
            seconds += extra
        groups.append(group)
        i += len(group)
    return groups
