"""Distributed training (DDP over gloo on CPU): two processes train one model, as under ``torchrun``."""

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

TRAIN = """
import sys
from pathlib import Path
from tests._train_fixtures import make_config
from miner.train.loop import train
corpus, backbone, teacher, out = map(Path, sys.argv[1:5])
train(make_config(corpus, backbone, teacher, out, max_updates=4, head_only_updates=2, save_every=2,
                  num_workers=0, mask_time_prob=0.0))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    port, out = free_port(), tmp_path / "run"
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
        args = [sys.executable, "-c", TRAIN, str(corpus), str(backbone_dir), str(spread_st_dir), str(out)]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    losses = [m["loss"] for m in read_metrics(out) if "loss" in m]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)  # rank 0 alone writes the metrics
    for step in ("step_000002", "step_000004"):
        ckpt = out / "checkpoints" / step
        assert {p.name for p in ckpt.glob("rng_state_*.pt")} == {"rng_state_0.pt", "rng_state_1.pt"}
    assert SpeechEncoder.from_pretrained(out / "final").dim == 16
