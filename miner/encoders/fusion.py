"""Fusion of the SAMU embedding and the ASR cascade's: ``normalize(w * samu + (1 - w) * asr)``.

Both vectors live in the same teacher space (the SAMU model's, centred or not), so a weighted sum of the two
unit vectors is a point of that space that searches the same databases. ``w = 1`` is SAMU alone, ``w = 0`` the
cascade alone. The weight comes from the speech model string (``fused,w=0.3``), else from the SAMU folder's
``config.json`` (``extra.fusion_weight``, written by :func:`save_fusion_weight` after
:func:`choose_fusion_weight` on a dev set), else 0.5.

One weight cannot serve both kinds of speech: where Whisper hears well (clean voices) the cascade is far ahead,
where it does not (robotic or short clips) SAMU is. A :class:`ConfidenceGate` (``extra.fusion_gate``, chosen on
dev by :func:`choose_fusion_gate`) gives the clips Whisper is sure of (mean token log-probability at or above a
threshold) their own weight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miner.encoders.cascade import AsrSpeechEncoder, check_waveforms
from miner.encoders.speech_spec import DEFAULT_FUSION_WEIGHT, FUSION_WEIGHT_KEY, SpeechSpec
from miner.encoders.speed import EncodeSpeed, Stopwatch
from miner.spaces import check_same_space

__all__ = [
    "CONFIDENCE_THRESHOLDS",
    "ConfidenceGate",
    "FUSION_GRID",
    "FusedSpeechEncoder",
    "FusionChoice",
    "best_weight",
    "choose_fusion_gate",
    "choose_fusion_weight",
    "clip_weights",
    "fuse",
    "fusion_gate_of",
    "save_fusion_weight",
]

log = logging.getLogger(__name__)

FUSION_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0, 0.1, ..., 1.0
# Whisper confidences (mean token log-probability) tried as gate thresholds: from "nearly sure" to the -1 under
# which faster-whisper drops a segment.
CONFIDENCE_THRESHOLDS: tuple[float, ...] = (-0.1, -0.15, -0.2, -0.3, -0.4, -0.5, -0.6, -0.8, -1.0)
GATE_KEY = "fusion_gate"  # in config.json's ``extra``: {"threshold": t, "weight": w}


def _check_weight(weight: float) -> float:
    w = float(weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"fusion weight {weight!r} must be from 0 (ASR only) to 1 (SAMU only)")
    return w


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fuse(samu: np.ndarray, asr: np.ndarray, weight: float | np.ndarray) -> np.ndarray:
    """``normalize(w * samu + (1 - w) * asr)`` row by row.

    Args:
        samu, asr: float (n, dim) L2-normalised rows, one per clip, in one space.
        weight: w from 0 to 1, or float (n,) one weight per clip (:func:`clip_weights`).

    Returns:
        float32 (n, dim), rows L2-normalised (a zero row where the two cancel exactly).
    """
    samu, asr = np.asarray(samu, dtype=np.float32), np.asarray(asr, dtype=np.float32)
    if samu.shape != asr.shape:
        raise ValueError(f"SAMU vectors {samu.shape} and ASR vectors {asr.shape} must have one shape")
    if np.ndim(weight) == 0:
        w: float | np.ndarray = _check_weight(float(weight))
    else:
        w = np.asarray(weight, dtype=np.float32).reshape(-1, 1)
        if len(w) != len(samu) or not np.all((w >= 0) & (w <= 1)):
            raise ValueError(f"per-clip weights must be {len(samu)} numbers from 0 to 1")
    return _unit_rows(w * samu + (1.0 - w) * asr)


@dataclass(frozen=True)
class ConfidenceGate:
    """Clips whose Whisper confidence is at least ``threshold`` are fused with ``weight`` instead of the base
    weight (confidence: the mean log-probability of the decoded tokens, 0 = certain)."""

    threshold: float
    weight: float

    def __post_init__(self) -> None:
        _check_weight(self.weight)
        if not np.isfinite(self.threshold) or self.threshold > 0:
            raise ValueError(f"gate threshold {self.threshold!r} must be a log-probability (<= 0)")

    def to_dict(self) -> dict[str, float]:
        return {"threshold": self.threshold, "weight": self.weight}


def clip_weights(
    weight: float, gate: ConfidenceGate | None, confidence: np.ndarray | None, n: int
) -> np.ndarray:
    """float32 (n,) fusion weight of each clip: the gate's weight where Whisper's confidence reaches its
    threshold, else ``weight`` (also where the confidence is unknown: NaN, or no gate / no confidences)."""
    w = np.full(n, _check_weight(weight), dtype=np.float32)
    if gate is not None and confidence is not None:
        conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if len(conf) != n:
            raise ValueError(f"{len(conf)} confidences for {n} clips")
        w[np.nan_to_num(conf, nan=-np.inf) >= gate.threshold] = gate.weight
    return w


@dataclass(frozen=True)
class FusionChoice:
    """The chosen weight, its dev R@1, and the R@1 of every weight tried (grid order)."""

    weight: float
    r1: float
    r1_by_weight: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "r1": self.r1,
            "r1_by_weight": {f"{w:g}": r for w, r in self.r1_by_weight.items()},
        }


def choose_fusion_weight(
    samu: np.ndarray,
    asr: np.ndarray,
    targets: np.ndarray,
    gold: Sequence[int] | np.ndarray,
    grid: Sequence[float] = FUSION_GRID,
) -> FusionChoice:
    """The weight of ``grid`` whose fused dev vectors retrieve their correct target most often (R@1).

    Args:
        samu: float (n, dim) SAMU vectors of n dev clips.
        asr: float (n, dim) ASR-cascade vectors of the same clips, same order.
        targets: float (m, dim) target embeddings (e.g. the dev translations and distractors).
        gold: int (n,) row of ``targets`` each clip should retrieve.
        grid: weights to try (default 0, 0.1, ..., 1).

    Every row is L2-normalised first (scores are cosines). A clip counts at a weight when its gold row is
    the top-scoring target (score ties between targets go to the lower row, as ``np.argmax``).
    Ties between weights go to the weight closest to 0.5 (both signals), then to the larger weight (SAMU).

    Returns:
        :class:`FusionChoice`.

    Raises:
        ValueError: shapes disagree, a gold row is out of range, or the grid is empty or leaves [0, 1].
    """
    samu, asr, tgt = _unit_rows(samu), _unit_rows(asr), _unit_rows(targets)
    gold = np.asarray(gold, dtype=np.int64).reshape(-1)
    if samu.ndim != 2 or samu.shape != asr.shape:
        raise ValueError(f"SAMU vectors {samu.shape} and ASR vectors {asr.shape} must both be (n, dim)")
    if tgt.ndim != 2 or tgt.shape[1] != samu.shape[1] or not len(tgt):
        raise ValueError(f"targets {tgt.shape} must be (m, {samu.shape[1]}) with m >= 1")
    if len(gold) != len(samu) or not len(gold):
        raise ValueError(f"{len(gold)} gold rows for {len(samu)} clips: give one per clip (n >= 1)")
    if gold.min() < 0 or gold.max() >= len(tgt):
        raise ValueError(f"gold rows must lie in 0..{len(tgt) - 1}, got {gold.min()}..{gold.max()}")
    weights = [_check_weight(w) for w in grid]
    if not weights:
        raise ValueError("the grid of weights is empty")
    # Scores are linear in the fused vector before its normalisation, and normalising a row does not
    # change its argmax: one product per side, then any weight's top-1 is cheap.
    s_scores, a_scores = samu @ tgt.T, asr @ tgt.T
    r1 = {}
    for w in weights:
        top = np.argmax(w * s_scores + (1.0 - w) * a_scores, axis=1)
        r1[w] = float(np.mean(top == gold))
    best = best_weight(r1)
    return FusionChoice(weight=best, r1=r1[best], r1_by_weight=r1)


@dataclass(frozen=True)
class GateChoice:
    """The best gate on dev (None when no gate beats the plain base weight), its dev R@1, and the base's."""

    gate: ConfidenceGate | None
    weight: float
    r1: float
    r1_plain: float
    share_confident: float  # of the dev clips at or above the threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate.to_dict() if self.gate is not None else None,
            "weight": self.weight,
            "r1": self.r1,
            "r1_plain": self.r1_plain,
            "share_confident": self.share_confident,
        }


def choose_fusion_gate(
    hits_by_weight: dict[float, np.ndarray],
    confidence: np.ndarray,
    langs: Sequence[str],
    thresholds: Sequence[float] = CONFIDENCE_THRESHOLDS,
    sets: Sequence[int] | None = None,
) -> GateChoice:
    """The base weight, threshold and confident-clip weight with the best dev R@1 (mean over languages).

    Args:
        hits_by_weight: for each weight of the grid, bool (n,) whether each dev clip's fused vector at that
            weight retrieves its gold text first (``miner.evaluate.top1_hits``).
        confidence: float (n,) Whisper's confidence per clip (NaN: unknown, never gated).
        langs: (n,) language of each clip: R@1 is averaged per language, as ``evaluate_retrieval`` reports it.
        thresholds: gate thresholds to try.
        sets: (n,) which dev set each clip is from (e.g. X->EN and EN->X, or two domains): R@1 is then the mean
            over sets of each set's mean over languages, so every set counts alike whatever its language count.

    Returns:
        :class:`GateChoice`; its ``gate`` is None unless some gate beats the best plain weight on dev (a gate
        must earn its place: with ties the simpler rule wins). Plain weights tie-break as :func:`best_weight`.
    """
    weights = sorted(hits_by_weight)
    if not weights:
        raise ValueError("no weights were scored")
    hits = {w: np.asarray(h, dtype=bool) for w, h in hits_by_weight.items()}
    n = len(next(iter(hits.values())))
    conf = np.nan_to_num(np.asarray(confidence, dtype=np.float64).reshape(-1), nan=-np.inf)
    set_of = np.zeros(n, dtype=np.int64) if sets is None else np.asarray(sets, dtype=np.int64).reshape(-1)
    if len(conf) != n or len(langs) != n or len(set_of) != n or any(len(h) != n for h in hits.values()):
        raise ValueError(f"hits, confidences, languages and sets must all have one entry per clip ({n})")
    lang_arr = np.asarray([str(x) for x in langs])
    by_set = [
        [(set_of == k) & (lang_arr == lang) for lang in sorted(set(lang_arr[set_of == k]))]
        for k in sorted(set(set_of.tolist()))
    ]

    def r1(row_hits: np.ndarray) -> float:
        return float(np.mean([np.mean([row_hits[g].mean() for g in groups]) for groups in by_set]))

    plain = {w: r1(hits[w]) for w in weights}
    base = best_weight(plain)
    best: tuple[float, ConfidenceGate | None, float] = (plain[base], None, base)
    for t in thresholds:
        sure = conf >= t
        if not sure.any() or sure.all():
            continue
        for w_base in weights:
            for w_sure in weights:
                if w_sure == w_base:
                    continue
                score = r1(np.where(sure, hits[w_sure], hits[w_base]))
                if score > best[0] + 1e-12:
                    best = (score, ConfidenceGate(float(t), float(w_sure)), float(w_base))
    score, gate, w_base = best
    share = float(np.mean(conf >= gate.threshold)) if gate is not None else 0.0
    return GateChoice(gate=gate, weight=w_base, r1=score, r1_plain=plain[base], share_confident=share)


def best_weight(score_by_weight: dict[float, float]) -> float:
    """The weight with the highest score; ties go to the weight closest to 0.5, then to the larger one."""
    if not score_by_weight:
        raise ValueError("no weights were scored")
    return max(score_by_weight, key=lambda w: (score_by_weight[w], -abs(w - 0.5), w))


def save_fusion_weight(
    model_dir: str | os.PathLike[str],
    weight: float,
    report: dict[str, Any] | None = None,
    gate: ConfidenceGate | None = None,
) -> Path:
    """Record ``weight`` as ``extra.fusion_weight`` in a SAMU folder's config.json (atomic rewrite).

    Args:
        model_dir: the SAMU model folder.
        weight: from 0 to 1.
        report: optional notes kept beside it as ``extra.fusion_weight_dev`` (e.g. ``FusionChoice.to_dict()``).
        gate: recorded as ``extra.fusion_gate``; None removes a gate recorded before.

    Returns:
        The config.json path. Folders without the key keep loading (the weight then defaults to 0.5).
    """
    cfg = Path(model_dir) / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{cfg} not found: pass the folder of a SAMU model")
    data = json.loads(cfg.read_text(encoding="utf-8"))
    extra = dict(data.get("extra") or {})
    extra[FUSION_WEIGHT_KEY] = _check_weight(weight)
    extra.pop(GATE_KEY, None)
    if gate is not None:
        extra[GATE_KEY] = gate.to_dict()
    if report is not None:
        extra[f"{FUSION_WEIGHT_KEY}_dev"] = report
    data["extra"] = extra
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".json", dir=cfg.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True))
    os.chmod(tmp, 0o644)
    os.replace(tmp, cfg)
    return cfg


def fusion_gate_of(folder: str | os.PathLike[str] | None) -> ConfidenceGate | None:
    """``extra.fusion_gate`` of a SAMU folder's config.json, or None when it records none.

    Raises:
        ValueError: the recorded gate is malformed (the message names the file and the fix).
    """
    if folder is None:
        return None
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return None
    value = (json.loads(cfg.read_text(encoding="utf-8")).get("extra") or {}).get(GATE_KEY)
    if value is None:
        return None
    try:
        return ConfidenceGate(float(value["threshold"]), float(value["weight"]))
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(
            f"{cfg}: extra.{GATE_KEY}={value!r} is not a gate ({exc}); it must be "
            '{"threshold": <log-prob <= 0>, "weight": <0..1>}: fix it, or run `miner eval fusion-weight --save` again'
        ) from exc


class FusedSpeechEncoder:
    """``normalize(w * samu(x) + (1 - w) * asr(x))``: a SAMU model and the ASR cascade of its space.

    Args:
        samu: a loaded SAMU ``SpeechEncoder``.
        asr: an :class:`~miner.encoders.cascade.AsrSpeechEncoder` in the same space.
        weight: w from 0 (ASR only) to 1 (SAMU only). At exactly 0 or 1 (and no gate) the unused side is not run.
        gate: clips Whisper is sure of get the gate's weight instead (:class:`ConfidenceGate`); None: one weight.

    Raises:
        SpaceMismatchError: the two are in different spaces (or dims).
        ValueError: the weight is outside [0, 1].
    """

    kind = "fused"

    def __init__(
        self,
        samu: Any,
        asr: AsrSpeechEncoder,
        weight: float = DEFAULT_FUSION_WEIGHT,
        gate: ConfidenceGate | None = None,
    ) -> None:
        check_same_space(
            samu.space_id,
            asr.space_id,
            f"SAMU model {samu.model_id}",
            f"ASR cascade {asr.model_id}",
            samu.dim,
            asr.dim,
        )
        self.samu, self.asr, self.weight, self.gate = samu, asr, _check_weight(weight), gate
        self.config = samu.config  # load_text_encoder_for(self) pairs text as for the SAMU model
        self.source_dir: str | None = getattr(samu, "source_dir", None)
        self.last_transcripts: list[str] | None = None
        self.last_speed: EncodeSpeed | None = None
        # (SAMU vectors, ASR vectors) of the last call when both sides ran: evaluations score all three
        # systems from one pass (Whisper is the slow side); with Whisper's confidence per clip (or None).
        self.last_parts: tuple[np.ndarray, np.ndarray] | None = None
        self.last_confidence: np.ndarray | None = None
        self.last_weights: np.ndarray | None = None  # float32 (n,) the weight each clip was fused with

    @property
    def dim(self) -> int:
        return int(self.samu.dim)

    @property
    def space_id(self) -> str:
        return str(self.samu.space_id)

    @property
    def model_id(self) -> str:
        """The speech model string that reloads this encoder: ``fused,w=0.5:/abs/folder``; with a gate, which
        only a folder records, ``fused:/abs/folder`` (weight and gate from its config.json)."""
        weight = None if self.gate is not None else self.weight
        return str(SpeechSpec("fused", self.source_dir or self.samu.model_id, weight, self.asr.lang))

    @property
    def fingerprint(self) -> str:
        """12 hex digits over both sides' fingerprints, the weight and the gate: one per fusion rule."""
        gate = "" if self.gate is None else f"|gate={self.gate.threshold!r},{self.gate.weight!r}"
        raw = f"fused|{self.samu.fingerprint}|{self.asr.fingerprint}|{self.weight!r}{gate}"
        return hashlib.sha1(raw.encode()).hexdigest()[:12]

    @property
    def device(self) -> Any:
        return self.samu.device

    def encode(
        self,
        waveforms: Sequence[np.ndarray],
        batch_size: int = 8,
        progress: bool = False,
        langs: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Embed waveforms: float32 (n, dim), rows L2-normalised, in input order (as encode_with_transcripts)."""
        return self.encode_with_transcripts(waveforms, batch_size, progress, langs)[0]

    def encode_with_transcripts(
        self,
        waveforms: Sequence[np.ndarray],
        batch_size: int = 8,
        progress: bool = False,
        langs: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, list[str] | None]:
        """Fused vectors and the transcripts behind them (None at w = 1, where Whisper does not run).

        Args:
            waveforms: n 1-D float32 arrays at 16 kHz.
            batch_size: clips per SAMU forward pass and 30 s windows per Whisper pass.
            progress: show progress bars.
            langs: one language per clip for Whisper (None entries: detected).

        Returns:
            (float32 (n, dim) L2-normalised rows, n transcripts or None); ``last_speed`` holds the call's
            audio-seconds per second, both sides together.
        """
        waves = check_waveforms(waveforms)
        watch = Stopwatch(waves)
        transcripts: list[str] | None = None
        self.last_parts = self.last_confidence = None
        if self.weight == 1.0 and self.gate is None:
            vectors = np.asarray(
                self.samu.encode(waves, batch_size=batch_size, progress=progress), np.float32
            )
            self.last_weights = np.ones(len(waves), np.float32)
        elif self.weight == 0.0 and self.gate is None:
            vectors, transcripts = self.asr.encode_with_transcripts(waves, batch_size, progress, langs)
            self.last_weights = np.zeros(len(waves), np.float32)
        else:
            s = self.samu.encode(waves, batch_size=batch_size, progress=progress)
            a, transcripts = self.asr.encode_with_transcripts(waves, batch_size, progress, langs)
            self.last_confidence = getattr(self.asr, "last_confidence", None)
            self.last_weights = clip_weights(self.weight, self.gate, self.last_confidence, len(waves))
            vectors = fuse(s, a, self.last_weights)
            self.last_parts = (np.asarray(s, np.float32), np.asarray(a, np.float32))
        self.last_transcripts = transcripts
        rule = f"w={self.weight:g}" + (
            "" if self.gate is None else f", w={self.gate.weight:g} at confidence >= {self.gate.threshold:g}"
        )
        self.last_speed = watch.done(log, f"fused ({rule}) embedded")
        return vectors, transcripts
