"""Which speech encoder a model string names: a SAMU model, the ASR cascade, or their fusion.

Every place that takes a speech model (``--model``, ``MINER_SPEECH_MODEL``, the API's ``speech_model``) takes
one string in this grammar, parsed here without loading anything::

    SPEC  := SAMU                         a SAMU model folder or hub id (today's behaviour)
           | "samu:" SAMU                 the same, explicitly
           | KIND [OPTIONS] [":" SAMU]    KIND is "asr" or "fused"; SAMU defaults to the shipped demo model
    OPTIONS := ("," KEY "=" VALUE)*       w=<0..1> (fused only), lang=<code> (asr and fused)

- ``asr[:SAMU]``: Whisper (CTranslate2) transcribes, and the text encoder paired with SAMU (its teacher, with
  its centring; ``paired:SAMU``) embeds the transcript, so the vectors live in SAMU's space and search the
  databases built for it. SAMU must be a local folder (its config.json alone is read; no speech weights load).
- ``fused[:SAMU]``: ``normalize(w * samu + (1 - w) * asr)``; ``w`` from ``,w=`` (one weight for every clip),
  else ``extra.fusion_weight`` in SAMU's config.json with ``extra.fusion_gate`` when recorded (another weight
  for the clips Whisper is sure of), else 0.5.
- ``,lang=fr`` fixes the language Whisper transcribes in (default: detected per clip; callers that know
  each clip's language, such as ``miner eval retrieval``, pass it instead).

Examples: ``runs/demo/final``, ``samu:runs/demo/final``, ``asr``, ``asr,lang=de:runs/demo/final``, ``fused``,
``fused,w=0.3:runs/demo/final``. A string whose part before the first ``:`` is neither a kind nor an existing
path (``whisper:x``) is an error that lists these forms.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # the CLI imports this module for its help texts: keep it light
    import numpy as np

    from miner.encoders.speed import EncodeSpeed

__all__ = [
    "DEFAULT_FUSION_WEIGHT",
    "KINDS",
    "SPEECH_MODEL_HELP",
    "SpeechModel",
    "SpeechSpec",
    "SpeechSpecError",
    "paired_text_name",
    "parse_speech_spec",
    "spec_space",
]

KINDS = ("samu", "asr", "fused")
DEFAULT_FUSION_WEIGHT = 0.5
FUSION_WEIGHT_KEY = "fusion_weight"  # in config.json's ``extra`` of a SAMU folder
_OPTIONS = {"asr": ("lang",), "fused": ("w", "lang"), "samu": ()}
_KIND_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
FORMS = (
    "a SAMU model folder or hub id, 'samu:PATH', 'asr', 'asr:PATH', 'fused', 'fused:PATH', with options "
    "after the kind such as 'fused,w=0.3:PATH' or 'asr,lang=fr'"
)
SPEECH_MODEL_HELP = (
    "Speech model: a SAMU folder or hub id ('samu:PATH' too); 'asr[:PATH]' (Whisper transcribes, the text "
    "encoder paired with SAMU model PATH embeds the transcript); 'fused[:PATH]' (normalize(w*samu + "
    "(1-w)*asr)); options after the kind: ',w=0.3' (fused; default: PATH's config.json extra.fusion_weight "
    "and extra.fusion_gate, a weight for clips Whisper is sure of; else 0.5), ',lang=fr' (ASR language; default: "
    "detected). PATH defaults to the demo model. "
    "Default: $MINER_SPEECH_MODEL or the demo model."
)


class SpeechSpecError(ValueError):
    """A speech model string that the grammar does not accept; the message lists the accepted forms."""


@runtime_checkable
class SpeechModel(Protocol):
    """What callers use of a speech encoder, whatever its kind (``SpeechEncoder``, ASR cascade, fusion)."""

    kind: str  # "samu", "asr" or "fused"
    last_speed: EncodeSpeed | None  # of the last encode() call: audio-seconds per second

    @property
    def dim(self) -> int: ...

    @property
    def space_id(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, waveforms: Any, batch_size: int = 8, progress: bool = False) -> np.ndarray:
        """16 kHz mono float32 waveforms -> float32 (n, dim), rows L2-normalised, in input order."""
        ...


@dataclass(frozen=True)
class SpeechSpec:
    """A parsed speech model string.

    Attributes:
        kind: ``samu``, ``asr`` or ``fused``.
        model: the SAMU folder or hub id; None for the shipped demo model (``asr`` and ``fused`` only).
        weight: the fusion weight given in the string (``fused`` only), else None.
        lang: the ASR language given in the string, else None (detected per clip).
    """

    kind: str
    model: str | None = None
    weight: float | None = None
    lang: str | None = None

    def __str__(self) -> str:
        """The string form, which :func:`parse_speech_spec` reads back to an equal spec."""
        opts = ([f"w={self.weight!r}"] if self.weight is not None else []) + (
            [f"lang={self.lang}"] if self.lang else []
        )
        head = ",".join([self.kind, *opts])
        return f"{head}:{self.model}" if self.model is not None else head


def parse_speech_spec(text: str) -> SpeechSpec:
    """Parse a speech model string (see the module docstring for the grammar).

    Args:
        text: e.g. ``"runs/x"``, ``"samu:runs/x"``, ``"asr"``, ``"fused,w=0.3:runs/x"``.

    Returns:
        The :class:`SpeechSpec`. A kind wins over a folder of the same name (write ``./asr`` or ``samu:asr``
        for a folder called ``asr``); any other existing path is a SAMU model, whatever it contains.

    Raises:
        SpeechSpecError: an unknown kind or option, a bad weight, or an empty string.
    """
    text = str(text).strip()
    if not text:
        raise SpeechSpecError(f"empty speech model string; accepted forms: {FORMS}")
    head, sep, rest = text.partition(":")
    kind, *options = head.split(",")
    if kind.lower() not in KINDS or (kind.lower() == "samu" and not sep):  # a bare "samu": a folder, as ever
        if Path(text).expanduser().exists() or not sep or not _KIND_LIKE.match(kind):
            return SpeechSpec("samu", text)  # a folder, a hub id, or a path that from_pretrained reports
        raise SpeechSpecError(
            f"unknown speech model kind {kind!r} in {text!r}; accepted forms: {FORMS} "
            f"(kinds: {', '.join(KINDS)})"
        )
    kind = kind.lower()
    values: dict[str, str] = {}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip().lower()
        if key not in _OPTIONS[kind] or not eq or not value.strip():
            allowed = ", ".join(f"{k}=..." for k in _OPTIONS[kind]) or "none"
            raise SpeechSpecError(
                f"bad option {option!r} for speech model kind {kind!r} in {text!r}; "
                f"options of {kind}: {allowed}"
            )
        values[key] = value.strip()
    model = (rest.strip() or None) if sep else None
    if kind == "samu" and model is None and sep:
        raise SpeechSpecError(f"{text!r}: 'samu:' needs a model folder or hub id after the colon")
    weight = _weight(values["w"], text) if "w" in values else None
    return SpeechSpec(kind, model, weight, values.get("lang"))


def _weight(value: str, text: str) -> float:
    try:
        w = float(value)
    except ValueError:
        w = math.nan
    if not 0.0 <= w <= 1.0:
        raise SpeechSpecError(f"fusion weight w={value!r} in {text!r} must be a number from 0 to 1")
    return w


def samu_folder(spec: SpeechSpec) -> Path | None:
    """The local SAMU folder a spec names (the demo model when it names none); None for a hub id."""
    if spec.model is None:
        from miner.demo import demo_model_dir

        return demo_model_dir()
    folder = Path(spec.model).expanduser()
    return folder if folder.is_dir() else None


def paired_text_name(model: str | None) -> str:
    """The ``paired:`` text encoder name for a speech model string: the teacher of its SAMU model.

    ``None`` and ``"asr"`` give ``"paired:"`` (the demo model's), ``"fused:runs/x"`` and ``"runs/x"`` give
    ``"paired:runs/x"``: every kind searches the databases built for its SAMU model.
    """
    if not model:
        return "paired:"
    spec = parse_speech_spec(model)
    return f"paired:{spec.model or ''}"


def fusion_weight_of(folder: str | Path | None) -> float | None:
    """``extra.fusion_weight`` from a SAMU folder's config.json, or None when it records none (older folders).

    Raises:
        ValueError: the recorded value is not a number from 0 to 1.
    """
    if folder is None:
        return None
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return None
    extra = json.loads(cfg.read_text(encoding="utf-8")).get("extra") or {}
    value = extra.get(FUSION_WEIGHT_KEY)
    if value is None:
        return None
    w = float(value)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"{cfg}: extra.{FUSION_WEIGHT_KEY}={value!r} must be a number from 0 to 1")
    return w


def spec_space(model: str | None) -> tuple[str, int] | None:
    """(space id, dim) of a speech model string from its SAMU folder's config.json, without loading weights.

    None when the string is empty or names no local folder (a hub id: the loader reports problems itself).
    Every kind lives in its SAMU model's space.
    """
    if not model:
        return None
    try:
        folder = samu_folder(parse_speech_spec(model))
    except SpeechSpecError:
        return None  # the loader raises the clear error
    cfg = folder / "config.json" if folder is not None else None
    if cfg is None or not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
        return str(data["space_id"]), int(data["dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # from_pretrained will report it properly


def load_speech_kind(spec: SpeechSpec, device: str | None = None) -> SpeechModel:
    """Load an ``asr`` or ``fused`` speech model (``samu`` goes through ``SpeechEncoder.from_pretrained``).

    Args:
        spec: the parsed string; its model defaults to the shipped demo model.
        device: torch device of the SAMU model (fused) and of a sentence-transformers teacher.

    Raises:
        SpeechSpecError: ``spec.kind`` is not ``asr`` or ``fused``.
    """
    from miner.encoders.cascade import AsrSpeechEncoder

    if spec.kind == "asr":
        return AsrSpeechEncoder(spec.model, lang=spec.lang, device=device)
    if spec.kind == "fused":
        from miner.encoders.fusion import FusedSpeechEncoder, fusion_gate_of
        from miner.encoders.samu import SpeechEncoder

        folder = samu_folder(spec)
        samu = SpeechEncoder.from_pretrained(
            str(folder) if folder is not None else str(spec.model), device=device
        ).for_inference()
        local = samu.source_dir  # a hub model is a local snapshot by now
        weight, gate = spec.weight, None
        if weight is None:  # the folder's recorded rule; a weight in the string means that one weight only
            weight, gate = fusion_weight_of(local), fusion_gate_of(local)
        if weight is None:
            weight = DEFAULT_FUSION_WEIGHT
        asr = AsrSpeechEncoder(local, lang=spec.lang, device=device)
        return FusedSpeechEncoder(samu, asr, weight, gate)
    raise SpeechSpecError(
        f"load_speech_kind takes 'asr' or 'fused', got {spec.kind!r}; accepted forms: {FORMS}"
    )
