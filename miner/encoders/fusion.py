"""Fusion of the SAMU embedding and the ASR cascade's: ``normalize(w * samu + (1 - w) * asr)``.

Both vectors live in the same teacher space (the SAMU model's, centred or not), so a weighted sum of the two
unit vectors is a point of that space that searches the same databases. ``w = 1`` is SAMU alone, ``w = 0`` the
cascade alone. The weight comes from the speech model string (``fused,w=0.3``), else from the SAMU folder's
``config.json`` (``extra.fusion_weight``, written by :func:`save_fusion_weight` after
:func:`choose_fusion_weight` on a dev set), else 0.5.
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
    "FUSION_GRID",
    "FusedSpeechEncoder",
    "FusionChoice",
    "best_weight",
    "choose_fusion_weight",
    "fuse",
    "save_fusion_weight",
]

log = logging.getLogger(__name__)

FUSION_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0, 0.1, ..., 1.0


def _check_weight(weight: float) -> float:
    w = float(weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"fusion weight {weight!r} must be from 0 (ASR only) to 1 (SAMU only)")
    return w


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fuse(samu: np.ndarray, asr: np.ndarray, weight: float) -> np.ndarray:
    """``normalize(w * samu + (1 - w) * asr)`` row by row.

    Args:
        samu, asr: float (n, dim) L2-normalised rows, one per clip, in one space.
        weight: w from 0 to 1.

    Returns:
        float32 (n, dim), rows L2-normalised (a zero row where the two cancel exactly).
    """
    samu, asr = np.asarray(samu, dtype=np.float32), np.asarray(asr, dtype=np.float32)
    if samu.shape != asr.shape:
        raise ValueError(f"SAMU vectors {samu.shape} and ASR vectors {asr.shape} must have one shape")
    w = _check_weight(weight)
    return _unit_rows(w * samu + (1.0 - w) * asr)


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


def best_weight(score_by_weight: dict[float, float]) -> float:
    """The weight with the highest score; ties go to the weight closest to 0.5, then to the larger one."""
    if not score_by_weight:
        raise ValueError("no weights were scored")
    return max(score_by_weight, key=lambda w: (score_by_weight[w], -abs(w - 0.5), w))


def save_fusion_weight(
    model_dir: str | os.PathLike[str], weight: float, report: dict[str, Any] | None = None
) -> Path:
    """Record ``weight`` as ``extra.fusion_weight`` in a SAMU folder's config.json (atomic rewrite).

    Args:
        model_dir: the SAMU model folder.
        weight: from 0 to 1.
        report: optional notes kept beside it as ``extra.fusion_weight_dev`` (e.g. ``FusionChoice.to_dict()``).

    Returns:
        The config.json path. Folders without the key keep loading (the weight then defaults to 0.5).
    """
    cfg = Path(model_dir) / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{cfg} not found: pass the folder of a SAMU model")
    data = json.loads(cfg.read_text(encoding="utf-8"))
    extra = dict(data.get("extra") or {})
    extra[FUSION_WEIGHT_KEY] = _check_weight(weight)
    if report is not None:
        extra[f"{FUSION_WEIGHT_KEY}_dev"] = report
    data["extra"] = extra
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".json", dir=cfg.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True))
    os.chmod(tmp, 0o644)
    os.replace(tmp, cfg)
    return cfg


class FusedSpeechEncoder:
    """``normalize(w * samu(x) + (1 - w) * asr(x))``: a SAMU model and the ASR cascade of its space.

    Args:
        samu: a loaded SAMU ``SpeechEncoder``.
        asr: an :class:`~miner.encoders.cascade.AsrSpeechEncoder` in the same space.
        weight: w from 0 (ASR only) to 1 (SAMU only). At exactly 0 or 1 the unused side is not run.

    Raises:
        SpaceMismatchError: the two are in different spaces (or dims).
        ValueError: the weight is outside [0, 1].
    """

    kind = "fused"

    def __init__(self, samu: Any, asr: AsrSpeechEncoder, weight: float = DEFAULT_FUSION_WEIGHT) -> None:
        check_same_space(
            samu.space_id,
            asr.space_id,
            f"SAMU model {samu.model_id}",
            f"ASR cascade {asr.model_id}",
            samu.dim,
            asr.dim,
        )
        self.samu, self.asr, self.weight = samu, asr, _check_weight(weight)
        self.config = samu.config  # load_text_encoder_for(self) pairs text as for the SAMU model
        self.source_dir: str | None = getattr(samu, "source_dir", None)
        self.last_transcripts: list[str] | None = None
        self.last_speed: EncodeSpeed | None = None
        # (SAMU vectors, ASR vectors) of the last call when both sides ran: evaluations score all three
        # systems from one pass (Whisper is the slow side).
        self.last_parts: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def dim(self) -> int:
        return int(self.samu.dim)

    @property
    def space_id(self) -> str:
        return str(self.samu.space_id)

    @property
    def model_id(self) -> str:
        """The speech model string that reloads this encoder, weight included: ``fused,w=0.5:/abs/folder``."""
        return str(SpeechSpec("fused", self.source_dir or self.samu.model_id, self.weight, self.asr.lang))

    @property
    def fingerprint(self) -> str:
        """12 hex digits over both sides' fingerprints and the weight: one per (model, weight) pair."""
        raw = f"fused|{self.samu.fingerprint}|{self.asr.fingerprint}|{self.weight!r}"
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
        self.last_parts = None
        if self.weight == 1.0:
            vectors = np.asarray(
                self.samu.encode(waves, batch_size=batch_size, progress=progress), np.float32
            )
        elif self.weight == 0.0:
            vectors, transcripts = self.asr.encode_with_transcripts(waves, batch_size, progress, langs)
        else:
            s = self.samu.encode(waves, batch_size=batch_size, progress=progress)
            a, transcripts = self.asr.encode_with_transcripts(waves, batch_size, progress, langs)
            vectors = fuse(s, a, self.weight)
            self.last_parts = (np.asarray(s, np.float32), np.asarray(a, np.float32))
        self.last_transcripts = transcripts
        self.last_speed = watch.done(log, f"fused (w={self.weight:g}) embedded")
        return vectors, transcripts
