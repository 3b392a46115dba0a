"""What the student is pulled towards: teacher embeddings of the transcripts (T1) and, for the paper's T3
setup, of the English sources; centred when the teacher space is narrow; with the ids that keep rows sharing a
text from being each other's in-batch negatives."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from miner.train.config import TrainConfig
from miner.train.data import Utterance, teacher_embeddings
from miner.train.processes import Processes

log = logging.getLogger(__name__)

__all__ = ["Targets", "build_targets", "normalise_rows", "distinct_ids"]


@dataclass
class Targets:
    """Teacher targets of one run.

    Attributes:
        teacher_space, dim: the teacher's space id and width.
        space_id: the student's space (``teacher_space``, or its centred id).
        center: float32 (dim,) mean teacher vector of the training transcripts, or None (not centred).
        train: per-row arrays of the training rows: ``targets`` float32 (n, dim), ``text_ids`` int64 (n,);
            with T3 also ``trans_targets`` float32 (n, dim) and ``trans_ids`` int64 (n,).
        trans_bank: float32 (n_distinct, dim): the T3 targets once per distinct English source, row k for
            ``trans_ids == k`` (the negatives of ``translation_negatives = "all"``); None otherwise.
        dev: float32 (n_dev, dim) targets of the dev rows.
        dev_trans, dev_trans_ids: float32 (n_dev, dim) / int64 (n_dev,) of the dev rows' English sources when
            every dev row has one (for the dev X->EN R@1), else None.
    """

    teacher_space: str
    dim: int
    space_id: str
    center: np.ndarray | None
    train: dict[str, np.ndarray]
    dev: np.ndarray
    dev_trans: np.ndarray | None
    dev_trans_ids: np.ndarray | None
    trans_bank: np.ndarray | None = None


def build_targets(
    cfg: TrainConfig,
    procs: Processes,
    device: torch.device,
    train_utts: Sequence[Utterance],
    dev: Sequence[Utterance],
) -> Targets:
    """Embed transcripts (and English sources) with the teacher; rank 0 computes and caches, the others read.

    A training row without a translation keeps its own transcript as its T3 target.
    """
    from miner.encoders.text import centred_space_id, load_text_encoder

    if cfg.translation_weight > 0 and not any(u.translation for u in train_utts):
        raise ValueError(
            f"translation_weight = {cfg.translation_weight} but no row of {cfg.train_manifest} has a "
            "translation column: add the English source per row, or set translation_weight = 0"
        )
    with_dev_trans = bool(dev) and all(u.translation for u in dev)
    trans = [u.translation or u.text for u in train_utts]
    dev_trans_texts = [u.translation or u.text for u in dev]
    teacher = None
    embedded: dict[str, np.ndarray] = {}
    for turn in (0, 1):  # rank 0 first, then everyone else reads the cache it wrote
        if (turn == 0) == procs.main:
            teacher = load_text_encoder(cfg.teacher, device=str(device))
            embedded["train"] = teacher_embeddings(teacher, [u.text for u in train_utts], cfg.cache_path)
            embedded["dev"] = (
                teacher_embeddings(teacher, [u.text for u in dev], cfg.cache_path)
                if dev
                else np.zeros((0, teacher.dim), np.float32)
            )
            if cfg.translation_weight > 0:
                embedded["trans"] = teacher_embeddings(teacher, trans, cfg.cache_path)
            if with_dev_trans:
                embedded["dev_trans"] = teacher_embeddings(teacher, dev_trans_texts, cfg.cache_path)
        procs.barrier()
    assert teacher is not None
    teacher_space, dim = teacher.space_id, int(teacher.dim)
    del teacher
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    center: np.ndarray | None = None
    space_id = teacher_space
    if cfg.center_targets:
        center = embedded["train"].mean(axis=0).astype(np.float32)
        space_id = centred_space_id(teacher_space, center)
        log.info(
            "centred targets: |mean teacher vector| = %.3f, space %s", float(np.linalg.norm(center)), space_id
        )

    def centre(x: np.ndarray) -> np.ndarray:
        return x if center is None or not len(x) else normalise_rows(x - center)

    train = {"targets": centre(embedded["train"]), "text_ids": distinct_ids([u.text for u in train_utts])}
    trans_bank: np.ndarray | None = None
    if cfg.translation_weight > 0:
        train["trans_targets"] = centre(embedded["trans"])
        train["trans_ids"] = distinct_ids(trans)
        if cfg.translation_negatives == "all":
            trans_bank = np.zeros((int(train["trans_ids"].max()) + 1, dim), np.float32)
            trans_bank[train["trans_ids"]] = train["trans_targets"]
    return Targets(
        teacher_space=teacher_space,
        dim=dim,
        space_id=space_id,
        center=center,
        train=train,
        dev=centre(embedded["dev"]),
        dev_trans=centre(embedded["dev_trans"]) if with_dev_trans else None,
        dev_trans_ids=distinct_ids(dev_trans_texts) if with_dev_trans else None,
        trans_bank=trans_bank,
    )


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows of ``x`` scaled to unit L2 norm."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def distinct_ids(texts: list[str]) -> np.ndarray:
    """int64 (n,): the same id for equal strings (ids ordered like the sorted distinct strings)."""
    _, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)
