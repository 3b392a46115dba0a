"""Tri-stage learning rate (paper Table II; fairseq ``tri_stage``, with a linear decay).

With ``w = round(warmup_frac * total)``, ``h = round(hold_frac * total)`` and ``d = total - w - h`` updates:

    step in [0, w):        peak * (init + (1 - init) * step / w)       linear warm-up from init * peak
    step in [w, w + h):    peak                                         hold
    step in [w + h, total]: peak * (1 - (1 - final) * (step - w - h) / d)   linear decay to final * peak

``step`` counts the updates already done, so update number ``step + 1`` uses ``lr_at(step)``. With the
default ``final = 0`` the LR reaches exactly 0 at ``step = total`` (after the last update; the last update
itself uses ``peak / d``), and ``init = 0.01`` keeps the first update from being wasted at LR 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TriStage", "lr_at", "tri_stage_scheduler"]


@dataclass
class TriStage:
    """The LR multiplier of the tri-stage schedule (a picklable callable: LambdaLR saves its fields)."""

    total: int
    warmup_frac: float = 0.1
    hold_frac: float = 0.4
    decay_frac: float = 0.5
    init_scale: float = 0.01
    final_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError(f"total updates must be >= 1, got {self.total}")
        fracs = (self.warmup_frac, self.hold_frac, self.decay_frac)
        if min(fracs) < 0 or abs(sum(fracs) - 1.0) > 1e-6:
            raise ValueError(f"warm-up, hold and decay fractions must be >= 0 and sum to 1, got {fracs}")

    @property
    def stages(self) -> tuple[int, int, int]:
        """Updates in (warm-up, hold, decay); they add up to ``total``."""
        w = round(self.warmup_frac * self.total)
        h = min(round(self.hold_frac * self.total), self.total - w)
        return w, h, self.total - w - h

    def __call__(self, step: int) -> float:
        w, h, d = self.stages
        if step < w:
            return self.init_scale + (1.0 - self.init_scale) * step / w
        if step < w + h or d == 0:
            return 1.0
        done = min(step - w - h, d)
        return 1.0 - (1.0 - self.final_scale) * done / d


def lr_at(
    step: int,
    *,
    total: int,
    peak: float,
    warmup_frac: float = 0.1,
    hold_frac: float = 0.4,
    decay_frac: float = 0.5,
    init_scale: float = 0.01,
    final_scale: float = 0.0,
) -> float:
    """Learning rate for update ``step + 1`` (``step`` updates done); see the module docstring."""
    return peak * TriStage(total, warmup_frac, hold_frac, decay_frac, init_scale, final_scale)(step)


def tri_stage_scheduler(
    optimizer: torch.optim.Optimizer, schedule: TriStage
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying ``schedule``; set each param group's ``lr`` to the peak before calling this."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
