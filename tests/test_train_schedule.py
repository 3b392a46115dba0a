"""Tri-stage learning rate at its breakpoints."""

from __future__ import annotations

import pytest
import torch

from miner.train.schedule import TriStage, lr_at, tri_stage_scheduler


def test_breakpoints() -> None:
    kw = {"total": 100, "peak": 1e-4}  # warm-up 10, hold 40, decay 50
    assert lr_at(0, **kw) == pytest.approx(1e-6)  # init_scale 0.01
    assert lr_at(5, **kw) == pytest.approx(1e-4 * (0.01 + 0.99 * 0.5))
    assert lr_at(10, **kw) == pytest.approx(1e-4)
    assert lr_at(49, **kw) == pytest.approx(1e-4)
    assert lr_at(50, **kw) == pytest.approx(1e-4)  # decay starts
    assert lr_at(75, **kw) == pytest.approx(0.5e-4)
    assert lr_at(99, **kw) == pytest.approx(1e-4 / 50)  # the last update is not wasted at 0
    assert lr_at(100, **kw) == 0.0
    assert lr_at(100, **kw, final_scale=0.05) == pytest.approx(5e-6)
    assert lr_at(0, **kw, init_scale=0.0) == 0.0


def test_no_warmup_and_validation() -> None:
    s = TriStage(10, warmup_frac=0.0, hold_frac=0.0, decay_frac=1.0)
    assert s.stages == (0, 0, 10) and s(0) == 1.0 and s(5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        TriStage(10, 0.5, 0.5, 0.5)


def test_lambda_lr_follows_lr_at() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=2e-3)
    sched = tri_stage_scheduler(opt, TriStage(20))
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, total=20, peak=2e-3) for s in range(20)])
    # The schedule's state survives a state_dict round trip (exact resume).
    sched2 = tri_stage_scheduler(torch.optim.Adam([p], lr=2e-3), TriStage(20))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 20
