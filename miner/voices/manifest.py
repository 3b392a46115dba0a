"""Manifest columns that say how a synthetic clip was made: ``source``, ``doc``, ``synth``, ``voice``, ``augment``.

Cells (plain strings, no tabs):

- ``source``: where the text came from (a corpus or package name); ``doc``: its document id, so that
  sentences of one document can be kept in one split or joined;
- ``synth``: the synthesizer's registry name (``espeak``, ``pico``, ``festival``, ``piper``);
- ``voice``: ``<voice id>;rate=<multiplier>;pitch=<multiplier>`` (:func:`voice_cell`), e.g.
  ``en-us+m3;rate=1.05;pitch=0.92``;
- ``augment``: :meth:`miner.voices.augment.AugmentRecord.as_string` (``none`` or empty: not augmented).

``miner.train.data.read_manifest`` reads only the columns it knows, so these travel along without effect on
training; a tested guarantee (``tests/test_voices.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROVENANCE_COLUMNS", "ClipProvenance", "parse_voice_cell", "voice_cell"]

PROVENANCE_COLUMNS = ("source", "doc", "synth", "voice", "augment")


def voice_cell(voice: str, rate: float = 1.0, pitch: float = 1.0) -> str:
    """``voice;rate=R;pitch=P`` with R and P as Python prints floats (``1.05``), the ``voice`` cell."""
    if ";" in voice or "\t" in voice:
        raise ValueError(f"voice id {voice!r} must not hold ';' or a tab")
    return f"{voice};rate={float(rate)!r};pitch={float(pitch)!r}"


def parse_voice_cell(cell: str) -> tuple[str, float, float]:
    """Inverse of :func:`voice_cell`: ``(voice, rate, pitch)``; a bare voice id means rate = pitch = 1.0.

    Raises:
        ValueError: a part other than ``rate=`` / ``pitch=`` after the voice, or a bad number.
    """
    voice, *parts = cell.strip().split(";")
    values = {"rate": 1.0, "pitch": 1.0}
    for part in parts:
        key, _, value = part.partition("=")
        if key not in values:
            raise ValueError(f"cannot read {part!r} in voice cell {cell!r} (expected rate=... or pitch=...)")
        values[key] = float(value)
    return voice, values["rate"], values["pitch"]


@dataclass(frozen=True)
class ClipProvenance:
    """How one clip was made; ``to_row()`` gives the five ``PROVENANCE_COLUMNS`` cells."""

    synth: str
    voice: str
    rate: float = 1.0
    pitch: float = 1.0
    augment: str = ""
    source: str = ""
    doc: str = ""

    def to_row(self) -> dict[str, str]:
        """Column name -> cell, tabs and newlines in free text replaced by spaces."""

        def clean(s: str) -> str:
            return s.replace("\t", " ").replace("\n", " ")

        return {
            "source": clean(self.source),
            "doc": clean(self.doc),
            "synth": self.synth,
            "voice": voice_cell(self.voice, self.rate, self.pitch),
            "augment": self.augment,
        }

    @classmethod
    def from_row(cls, row: dict[str, str]) -> ClipProvenance:
        """Read the columns back from a manifest row (missing ones empty)."""
        voice, rate, pitch = parse_voice_cell(row.get("voice", ""))
        return cls(
            synth=row.get("synth", ""),
            voice=voice,
            rate=rate,
            pitch=pitch,
            augment=row.get("augment", ""),
            source=row.get("source", ""),
            doc=row.get("doc", ""),
        )
