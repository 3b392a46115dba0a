"""Distributed training under torchrun (DDP over gloo on CPU): two processes train one model."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests._train_fixtures import read_metrics

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
train_manifest = "{corpus}"
backbone = "{backbone}"
teacher = "{teacher}"
out_dir = "{out}"
max_updates = 4
head_only_updates = 2
peak_lr = 3e-3
batch_seconds = 2.0
log_every = 1
save_every = 2
eval_every = 0
num_workers = 0
mask_time_prob = 0.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_train(corpus: Path, backbone: Path, teacher: Path, out: Path) -> list[float]:
    """Train CONFIG as the README says, in two torchrun processes; the losses rank 0 logged."""
    config = out.parent / f"{out.name}.toml"
    config.write_text(CONFIG.format(corpus=corpus, backbone=backbone, teacher=teacher, out=out))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    # torchrun starts one process per device and sets RANK, WORLD_SIZE, MASTER_ADDR / MASTER_PORT.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    args = [*torchrun, "--master_port", str(free_port()), "-m", "miner", "train", str(config)]
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return [m["loss"] for m in read_metrics(out) if "loss" in m]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["wav2vec2", "whisper"])
def test_two_processes_train_one_model(
    backbone: str,
    corpus: Path,
    tiny_wav2vec2_dir: Path,
    tiny_whisper_dir: Path,
    spread_st_dir: Path,
    tmp_path: Path,
) -> None:
    """The wav2vec2 fixture has LayerDrop 0.1: each process skips other layers in the full phase."""
    from miner.encoders.samu import SpeechEncoder

    backbone_dir = tiny_wav2vec2_dir if backbone == "wav2vec2" else tiny_whisper_dir
    out = tmp_path / "run"
    losses = torchrun_train(corpus, backbone_dir, spread_st_dir, out)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)  # rank 0 alone writes the metrics
    for step in ("step_000002", "step_000004"):
        ckpt = out / "checkpoints" / step
        assert {p.name for p in ckpt.glob("rng_state_*.pt")} == {"rng_state_0.pt", "rng_state_1.pt"}
    assert SpeechEncoder.from_pretrained(out / "final").dim == 16


@pytest.mark.slow
def test_a_distributed_run_resumes_exactly(
    corpus: Path, tiny_wav2vec2_dir: Path, spread_st_dir: Path, tmp_path: Path
) -> None:
    """Killed after its step-2 checkpoint, the two-process run continues with the same losses."""
    import shutil

    whole = torchrun_train(corpus, tiny_wav2vec2_dir, spread_st_dir, tmp_path / "a")
    shutil.copytree(
        tmp_path / "a" / "checkpoints" / "step_000002", tmp_path / "b" / "checkpoints" / "step_000002"
    )
    resumed = torchrun_train(corpus, tiny_wav2vec2_dir, spread_st_dir, tmp_path / "b")
    assert resumed == whole[2:]  # steps 3 and 4, bit for bit, LayerDrop and dropout draws included
