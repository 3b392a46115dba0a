"""SAMU-XLSR distillation (paper section II-D): a speech student learns the frozen text teacher's embeddings.

    loss = mean_i (1 - cos(z_i, teacher(t_i)))  [+ w * in-batch InfoNCE]

Recipe (Table II): the teacher is frozen and embeds each distinct transcript once (cached); the CNN feature
encoder is frozen throughout; the first ``head_only_updates`` train only pooling + projection (the backbone
still runs in training mode: dropout and time masking on), then the transformer trains too; Adam (betas 0.9 /
0.98, eps 1e-6 as in fairseq's wav2vec 2.0 recipes) with the tri-stage LR of :mod:`miner.train.schedule`;
batches of similar length drawn with Eq. 3 language re-balancing; gradient clipping; mixed precision on CUDA
(bf16 where supported, else fp16 with a GradScaler); DDP when launched by ``torchrun`` (WORLD_SIZE > 1).

Resuming is exact: the next update after a restart sees the same batch, dropout and masking draws, weights
and optimizer state as an uninterrupted run, so it gives the same loss.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from miner.train import checkpoint as ckpt
from miner.train.batches import batch_stream, open_frame_caches, process_batches
from miner.train.card import MODEL_CARD, model_card
from miner.train.config import RESUME_NEUTRAL, TrainConfig
from miner.train.data import Utterance, bucket_batches, read_manifest
from miner.train.dev_metrics import dev_recall_at_1, dev_recall_at_1_translations, embed_dev
from miner.train.objectives import MASK_FRAME_SECONDS, configure_time_masking, distill_loss
from miner.train.processes import Processes
from miner.train.run_log import LogWindow, MetricsFile, log_to_file
from miner.train.sampling import LanguageSampler, language_probs
from miner.train.schedule import TriStage, tri_stage_scheduler
from miner.train.student import Student, build_model, to_device
from miner.train.targets import build_targets

if TYPE_CHECKING:
    from miner.train.features import FrameCache

log = logging.getLogger(__name__)

__all__ = ["distill_loss", "train", "configure_time_masking", "MODEL_CARD"]


# -- the trainer ---------------------------------------------------------------------------------------------
class _Trainer:
    def __init__(self, config: TrainConfig, procs: Processes):
        self.cfg = config
        self.procs = procs
        self.device = procs.device
        self.out = Path(config.out_dir)
        self.step = 0
        self.seen_utts = 0.0
        self.seen_seconds = 0.0
        self._pending = [0.0, 0.0]  # this process's utterances / seconds not yet added to seen_*
        self.full_phase = False
        self.metrics = MetricsFile(self.out / "metrics.jsonl", enabled=procs.main)

    # -- setup ---------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        utts = read_manifest(cfg.train_manifest)  # type: ignore[arg-type]
        self.dev = read_manifest(cfg.dev_manifest) if cfg.dev_manifest else []
        self.train_utts = utts
        log.info(
            "train manifest %s: %d utterances, %.2f h, languages %s",
            cfg.train_manifest,
            len(utts),
            sum(u.duration for u in utts) / 3600,
            dict(sorted(Counter(u.lang for u in utts).items())),
        )

    def _drop_short(self) -> None:
        if self.cfg.mask_time_prob <= 0:
            return
        min_seconds = self.cfg.mask_time_length * MASK_FRAME_SECONDS
        keep = [u for u in self.train_utts if u.duration >= min_seconds]
        if len(keep) < len(self.train_utts):
            log.warning(
                "skipping %d training utterances shorter than %.3f s (time masking needs %d frames)",
                len(self.train_utts) - len(keep),
                min_seconds,
                self.cfg.mask_time_length,
            )
        if not keep:
            raise ValueError(
                f"no training utterance is at least {min_seconds:.3f} s long: lower mask_time_length "
                "or mask_time_prob = 0"
            )
        self.train_utts = keep

    def _teacher_targets(self) -> None:
        t = build_targets(self.cfg, self.procs, self.device, self.train_utts, self.dev)
        self.teacher_space, self.dim, self.space_id, self.center = (
            t.teacher_space,
            t.dim,
            t.space_id,
            t.center,
        )
        self.train_rows = t.train
        self.dev_targets = t.dev
        self.dev_text_ids = np.arange(len(self.dev), dtype=np.int64)
        self.dev_trans_targets, self.dev_trans_ids = t.dev_trans, t.dev_trans_ids
        self.trans_bank = torch.from_numpy(t.trans_bank).to(self.device) if t.trans_bank is not None else None

    def _build_model(self, resume_from: Path | None) -> None:
        model = build_model(
            self.cfg,
            resume_from,
            teacher_space=self.teacher_space,
            space_id=self.space_id,
            dim=self.dim,
            center=self.center,
        )
        model.to(self.device)
        model.train()
        self.model = model
        self.head_params = model.head_parameters()
        self.tf_params = (
            [] if self.cfg.backbone_frozen_whole_run else list(model.backbone.transformer_parameters())
        )

    def _build_optim(self) -> None:
        cfg = self.cfg
        groups = [{"params": self.head_params}]
        if self.tf_params:
            groups.append({"params": self.tf_params})
        self.optimizer = torch.optim.Adam(groups, lr=cfg.peak_lr, betas=(0.9, 0.98), eps=1e-6)
        schedule = TriStage(
            cfg.max_updates,
            cfg.warmup_frac,
            cfg.hold_frac,
            cfg.decay_frac,
            cfg.init_lr_scale,
            cfg.final_lr_scale,
        )
        self.scheduler = tri_stage_scheduler(self.optimizer, schedule)
        self.amp_dtype: torch.dtype | None = None
        if cfg.amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _build_sampler(self) -> None:
        cfg = self.cfg
        durations = np.array([u.duration for u in self.train_utts])

        def batcher(indices: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
            return bucket_batches(indices, durations, cfg.batch_seconds, rng)

        self.sampler = LanguageSampler(
            [u.lang for u in self.train_utts],
            cfg.alpha,
            seed=cfg.seed,
            epoch_size=cfg.epoch_size,
            batcher=batcher,
        )
        q = language_probs(self.sampler.counts, cfg.alpha)
        log.info("language sampling (alpha=%g): %s", cfg.alpha, {k: round(v, 4) for k, v in q.items()})

    def _set_phase(self, full: bool) -> None:
        """Head only, or head + transformer; the CNN feature encoder stays frozen either way."""
        for p in self.tf_params:
            p.requires_grad_(full)
        self.model.backbone.freeze_feature_encoder()
        self.full_phase = full
        student: nn.Module = Student(self.model)
        if self.procs.world > 1:  # DDP registers the parameters that need grads when built: rebuild per phase
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # LayerDrop (wav2vec2's layerdrop) skips other layers in each process: their parameters get no
            # gradient there, and DDP must be told to look for them or the gradient all-reduces mismatch.
            config = self.model.backbone.config
            layerdrop = max(float(getattr(config, k, 0.0) or 0.0) for k in ("layerdrop", "encoder_layerdrop"))
            unused = full and layerdrop > 0
            student = DistributedDataParallel(student, device_ids=ids, find_unused_parameters=unused)
        self.student = student
        if full:
            log.info(
                "step %d: the transformer trains from now on (CNN feature encoder stays frozen)", self.step
            )

    # -- resume --------------------------------------------------------------------------------------------
    def _resume(self, folder: Path) -> None:
        state = ckpt.load_trainer_state(folder, self.cfg.to_dict(), RESUME_NEUTRAL, self.procs.rank)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        self.seen_utts = float(state["seen_utterances"])
        self.seen_seconds = float(state["seen_seconds"])
        log.info("resumed from %s at step %d", folder, self.step)

    def _flush_seen(self) -> None:
        """Add every process's utterances / audio since the last call to the run totals."""
        utts, seconds = self.procs.sum(self._pending)
        self.seen_utts += utts
        self.seen_seconds += seconds
        self._pending = [0.0, 0.0]

    def _save_checkpoint(self) -> None:
        self._flush_seen()
        folder = ckpt.checkpoint_dir(self.out, self.step)
        if self.procs.main:
            self.model.save_pretrained(folder, include_backbone=not self.cfg.backbone_frozen_whole_run)
        self.procs.barrier()
        ckpt.save_state(ckpt.rng_file(folder, self.procs.rank), ckpt.capture_rng())
        self.procs.barrier()
        if self.procs.main:
            ckpt.save_state(
                folder / ckpt.TRAINER_STATE,
                {
                    "format": ckpt.STATE_FORMAT,
                    "step": self.step,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                    "sampler": self.sampler.state_dict(),
                    "seen_utterances": self.seen_utts,
                    "seen_seconds": self.seen_seconds,
                    "config": self.cfg.to_dict(),
                    "world_size": self.procs.world,
                },
            )
            ckpt.prune_checkpoints(self.out, self.cfg.keep_checkpoints)
            log.info("saved checkpoint %s", folder)
        self.procs.barrier()

    # -- batches -------------------------------------------------------------------------------------------
    def _loader(
        self, utts: list[Utterance], rows: dict[str, np.ndarray], batches: list[np.ndarray]
    ) -> Iterator[dict[str, Any]]:
        """Batches of model inputs plus ``rows`` (per-row arrays: targets, text_ids, ...) sliced to each batch."""
        frames = self.frames if utts is self.train_utts else self.dev_frames
        assert (frames is None) == (self.frames is None)  # cached frames are built for train and dev together
        return batch_stream(
            utts,
            rows,
            batches,
            frames=frames,
            prepare=self.model.backbone.prepare,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            seed=self.cfg.seed,
        )

    def _train_batches(self) -> Generator[dict[str, Any], None, None]:
        return process_batches(
            self.sampler,
            self.procs.world,
            self.procs.rank,
            lambda mine: self._loader(self.train_utts, self.train_rows, mine),
        )

    # -- steps ---------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _update(self, batches: Iterator[dict[str, Any]]) -> dict[str, float]:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = cos_total = 0.0
        utts = seconds = 0.0
        for micro in range(cfg.grad_accum):
            batch = to_device(next(batches), self.device)
            last = micro == cfg.grad_accum - 1
            sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if not last and self.procs.world > 1:  # DDP: all-reduce gradients once per update
                sync = self.student.no_sync()  # type: ignore[operator]
            with sync:
                with self._autocast():
                    z = self.student(batch)
                loss, cos_loss = distill_loss(
                    z, batch["targets"], batch["text_ids"], cfg.contrastive_weight, cfg.temperature
                )
                if "trans_targets" in batch:  # T3: the English source is a second target
                    trans_loss, _ = distill_loss(
                        z,
                        batch["trans_targets"],
                        batch["trans_ids"],
                        cfg.contrastive_weight,
                        cfg.temperature,
                        bank=self.trans_bank,
                    )
                    loss = loss + cfg.translation_weight * trans_loss
                self.scaler.scale(loss / cfg.grad_accum).backward()
            total += float(loss.detach()) / cfg.grad_accum
            cos_total += float(cos_loss.detach()) / cfg.grad_accum
            utts += batch["n"]
            seconds += batch["seconds"]
        lr = float(self.optimizer.param_groups[0]["lr"])  # the LR this update uses
        params = [p for p in self.head_params + self.tf_params if p.requires_grad]
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return {
            "loss": total,
            "cos_loss": cos_total,
            "utts": utts,
            "seconds": seconds,
            "grad_norm": grad_norm,
            "lr": lr,
        }

    @torch.no_grad()
    def dev_loss(self) -> float | None:
        """Mean cosine distance over the dev set (eval mode: no dropout, no masking).

        Also sets ``self.dev_r1``: the share of dev utterances whose nearest dev target (by cosine, among all
        dev targets) is their own: a retrieval signal the loss alone does not give; and, when every dev row
        has a translation, ``self.dev_r1_en``: the same against the distinct dev translations (X->EN).
        """
        if not self.dev:
            return None
        self.model.eval()
        durations = np.array([u.duration for u in self.dev])
        batches = bucket_batches(np.arange(len(self.dev)), durations, self.cfg.batch_seconds)
        dev_rows = {"targets": self.dev_targets, "text_ids": self.dev_text_ids}
        loader = self._loader(self.dev, dev_rows, batches)
        try:
            z_all, mean_distance = embed_dev(
                Student(self.model), batches, loader, self.device, self._autocast
            )
        finally:
            self.model.train()
        self.dev_r1 = dev_recall_at_1(z_all, self.dev_targets)
        self.dev_r1_en: float | None = None
        if self.dev_trans_targets is not None and self.dev_trans_ids is not None:
            self.dev_r1_en = dev_recall_at_1_translations(z_all, self.dev_trans_targets, self.dev_trans_ids)
        return mean_distance

    # -- the run -------------------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        self._load_data()
        self._drop_short()
        self._teacher_targets()
        resume_from = ckpt.latest_checkpoint(self.out)
        self._build_model(resume_from)  # the head's init is seeded with cfg.seed, the same in every process
        # Dropout and masking draws differ per process (a resumed run restores these states instead).
        random.seed(cfg.seed + self.procs.rank)
        np.random.seed(cfg.seed + self.procs.rank)
        torch.manual_seed(cfg.seed + self.procs.rank)
        self._build_optim()
        self._build_sampler()
        self.frames: FrameCache | None = None
        self.dev_frames: FrameCache | None = None
        if cfg.cache_features:
            self._build_frame_cache()
        if resume_from is not None:
            self._resume(resume_from)
        self._set_phase(self.step >= cfg.head_only_updates and not cfg.backbone_frozen_whole_run)
        if cfg.eval_every and self.step == 0:
            self._evaluate()  # the starting point, for comparison
        batches = self._train_batches()
        bar = tqdm(
            total=cfg.max_updates, initial=self.step, desc="train", unit="upd", disable=not self.procs.main
        )
        window = LogWindow()
        try:
            while self.step < cfg.max_updates:
                if not self.full_phase and self.step >= cfg.head_only_updates and self.tf_params:
                    self._set_phase(True)
                stats = self._update(batches)
                bar.update(1)
                self._pending[0] += stats["utts"]
                self._pending[1] += stats["seconds"]
                window.add(stats)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_updates:
                    self._log_window(window, stats, bar)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_updates:
                    self._evaluate()
                if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.max_updates:
                    self._save_checkpoint()
        finally:
            bar.close()
            batches.close()  # shuts down loader workers
        final_dev = self._evaluate()
        return self._finish(final_dev)

    def _build_frame_cache(self) -> None:
        if self.cfg.mask_time_prob > 0:
            log.info("cached frames come from the backbone in eval mode: no time masking or backbone dropout")
        self.frames, self.dev_frames = open_frame_caches(
            self.model,
            self.train_utts,
            self.dev,
            self.cfg.cache_path,
            self.cfg.batch_seconds,
            self.device,
            self.procs.main,
            self.procs.barrier,
        )

    def _log_window(self, window: LogWindow, stats: dict[str, float], bar: tqdm) -> None:
        totals = self.procs.sum(window.sums())
        self._flush_seen()
        record = window.record(
            totals,
            step=self.step,
            lr=stats["lr"],
            hours=self.seen_seconds / 3600,
            grad_norm=stats["grad_norm"],
            phase="full" if self.full_phase else "head",
        )
        log.info(
            "step %d loss %.5f cos %.5f lr %.3g hours %.3f utt/s %.1f (%s)",
            self.step,
            record["loss"],
            record["cos_loss"],
            record["lr"],
            record["hours"],
            record["utt_per_s"],
            record["phase"],
        )
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        self.metrics.write(record)
        window.reset()

    def _evaluate(self) -> float | None:
        value = self.dev_loss() if self.procs.main else None
        if value is not None:
            record = {"step": self.step, "dev_loss": value, "dev_r1": self.dev_r1}
            extra = ""
            if self.dev_r1_en is not None:
                record["dev_r1_en"] = self.dev_r1_en
                extra = f" X->EN R@1 {self.dev_r1_en:.3f}"
            log.info("step %d dev loss %.5f dev R@1 %.3f%s", self.step, value, self.dev_r1, extra)
            self.metrics.write(record)
        self.procs.barrier()
        return value

    def _finish(self, final_dev: float | None) -> Path:
        final = self.out / "final"
        if self.procs.main:
            self.model.config.extra["train_steps"] = self.step
            if final_dev is not None:
                self.model.config.extra["dev_loss"] = final_dev
            self.model.save_pretrained(final, include_backbone=True)
            card = model_card(
                self.cfg,
                self.model,
                train_utts=self.train_utts,
                centred=self.center is not None,
                teacher_space=self.teacher_space,
                step=self.step,
                seen_seconds=self.seen_seconds,
                seen_utts=self.seen_utts,
                final_dev=final_dev,
            )
            (final / MODEL_CARD).write_text(card, encoding="utf-8")
            log.info("final model in %s (space %s)", final, self.model.space_id)
        self.procs.barrier()
        return final


def train(config: TrainConfig) -> Path:
    """Distil a SAMU speech encoder; resume from the newest checkpoint in ``config.out_dir`` if there is one.

    Args:
        config: a :class:`~miner.train.config.TrainConfig` (validated here).

    Returns:
        The final model folder ``<out_dir>/final`` (``SpeechEncoder.from_pretrained`` loads it), holding
        ``MODEL_CARD.md``.
    """
    config.validate()
    procs = Processes.setup()
    try:
        with log_to_file(Path(config.out_dir) / "train.log" if procs.main else None):
            return _Trainer(config, procs).run()
    finally:
        procs.teardown()
