"""Small frozen records shared by every stage: recordings, segments, sentences and alignments.

Times are seconds (float); ids are strings. Each record round-trips through ``to_dict`` / ``from_dict`` so that
manifests are plain JSONL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

SAMPLE_RATE = 16_000

T = TypeVar("T", bound="_Record")


def seconds_to_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Convert seconds to a sample count, rounding half up (the one place this rounding happens)."""
    return int(seconds * sample_rate + 0.5)


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Recording(_Record):
    """An audio file: ``id`` is stable across runs (its path relative to the audio root)."""

    id: str
    path: str
    duration: float
    sample_rate: int
    channels: int = 1
    lang: str | None = None


@dataclass(frozen=True)
class Segment(_Record):
    """A span of a recording, ``start`` and ``duration`` in seconds."""

    id: str
    recording_id: str
    path: str
    start: float
    duration: float
    lang: str | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration

    def overlaps(self, other: Segment) -> bool:
        """True when both segments are of one recording and share time (touching ends do not overlap)."""
        return self.recording_id == other.recording_id and self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Sentence(_Record):
    """A text item of a corpus; ``id`` is stable (external id or ``<file>:<line>``)."""

    id: str
    text: str
    lang: str | None = None
    source: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Alignment(_Record):
    """A mined pair: source row (speech) and target row (text or speech) with its margin score and cosine."""

    score: float
    source_row: int
    target_row: int
    cosine: float | None = None
    direction: str | None = None
