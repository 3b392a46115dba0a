"""kill -9 of a `miner index build --engine ray` driver while its actors embed blocks, and again in the final
local step, then the same command: the database is byte-identical to an uninterrupted Ray build (issue 18).
The driver runs in a child process attached to a local Ray started here, so killing it orphans nothing: Ray
ends a dead driver's actors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="ray[data] is not installed: pip install 'samu-miner[ray]'")
import ray  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

DRIVER = r"""
import os, signal, sys, threading, time
from pathlib import Path
import index.manifest
import miner.distributed.jobs as jobs

jobs.TEXT_BLOCK_SIZE = 25  # several blocks for a small corpus
point, _, at = os.environ.get("CRASH", "none:0").partition(":")
at = int(at)
home = Path(sys.argv[sys.argv.index("--home") + 1])
if point == "blocks":  # the driver dies once `at` blocks are embedded (others may be in flight)
    def watch():
        while True:
            if len(list((home / ".ray-work").glob("*/*.done"))) >= at:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()
elif point == "manifest":  # in the local step that writes the database
    save, calls = index.manifest.Manifest.save, [0]
    def patched(self, folder):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return save(self, folder)
    index.manifest.Manifest.save = patched
sys.argv = ["miner", *sys.argv[1:]]
from miner.cli import main
main()
"""


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _run(args: list[str], address: str, crash: str | None = None) -> int:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "RAY_ADDRESS": address,
        "CRASH": crash or "none:0",
    }
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True, timeout=600
    )
    if crash is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode


def test_ray_index_build_killed_and_resumed_is_byte_identical(
    tmp_path: Path, tiny_st_dir: Path, ray_address: str
) -> None:
    rng = np.random.default_rng(4)
    words = ["cat", "dog", "house", "sofa", "runs", "sleeps", "the", "a", "on"]
    corpus = tmp_path / "c.txt"
    corpus.write_text(
        "\n".join(" ".join(rng.choice(words, int(rng.integers(2, 7)))) for _ in range(150)) + "\n"
    )

    def args(home: Path) -> list[str]:
        return ["index", "build", "--name", "en", "--input", str(corpus), "--encoder", str(tiny_st_dir),
                "--engine", "ray", "--workers", "1", "--shard-size", "40", "--factory", "Flat",
                "--home", str(home)]  # fmt: skip

    _run(args(tmp_path / "ref"), ray_address)
    home = tmp_path / "home"
    assert _run(args(home), ray_address, "blocks:2") == -signal.SIGKILL
    done = len(list((home / ".ray-work").glob("*/*.done")))
    assert 2 <= done < 6  # killed while blocks were still pending
    assert _run(args(home), ray_address, "manifest:2") == -signal.SIGKILL  # the Ray pass finished this time
    _run(args(home), ray_address)
    want = {p.name: p.read_bytes() for p in sorted((tmp_path / "ref" / "en").iterdir())}
    got = {p.name: p.read_bytes() for p in sorted((home / "en").iterdir())}
    assert sorted(got) == sorted(want)
    for name in want:
        if name == "manifest.json":
            a, b = json.loads(got[name]), json.loads(want[name])
            a.pop("created"), b.pop("created")
            assert a == b
        else:
            assert got[name] == want[name], f"{name} differs after resume"
    assert not (home / ".ray-work" / "index-en").exists()
