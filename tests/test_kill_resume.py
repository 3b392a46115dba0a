"""kill -9 at many points of `miner index build` and `miner mine` (the real CLI in a child process), then the
same command again: the outputs are byte-identical to an uninterrupted run (issue 18)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from miner.audio import write_audio
from miner.encoders.samu import SpeechEncoder
from tests.conftest import make_clip

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

# The CLI in a child process; CRASH=<point>:<n> SIGKILLs it just before the n-th call of that point.
CLI = r"""
import os, signal, sys
import numpy as np
import index.build, index.manifest, index.store, miner.mine_job, miner.stages
from miner.encoders import text as text_encoders

point, _, at = os.environ.get("CRASH", "none:0").partition(":")
at, calls = int(at), [0]

def hook(owner, attr):
    original = getattr(owner, attr)
    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(owner, attr, patched)

targets = {
    "encode": (text_encoders.SentenceTransformerTextEncoder, "encode"),
    "checkpoint": (index.build.np, "savez"),
    "manifest": (index.manifest.Manifest, "save"),
    "store": (index.store.Store, "add_many"),
    "embed_file": (miner.stages.SpeechEmbedStage, "embed_file"),
    "atomic": (miner.mine_job, "_atomic_write_text"),
}
if point in targets:
    hook(*targets[point])
sys.argv = ["miner", *sys.argv[1:]]
from miner.cli import main
main()
"""


def miner(args: list[str], crash: str | None = None) -> int:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": "1",
        "CRASH": crash or "none:0",
    }
    proc = subprocess.run(
        [sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True, timeout=300
    )
    if crash is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_created(manifest: bytes) -> dict:
    data = json.loads(manifest)
    data.pop("created", None)
    return data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    words = ["cat", "dog", "house", "sofa", "runs", "sleeps", "the", "a", "on", "in"]
    rng = np.random.default_rng(3)
    lines = [" ".join(rng.choice(words, size=int(rng.integers(2, 7)))) for _ in range(800)]
    path.write_text("\n".join(lines) + "\n")  # short random sentences: many exact duplicates
    return path


def _build_args(corpus: Path, home: Path, encoder: Path) -> list[str]:
    return ["index", "build", "--name", "en", "--input", str(corpus), "--encoder", str(encoder),
            "--shard-size", "150", "--batch-size", "40", "--checkpoint-rows", "60", "--factory", "Flat",
            "--home", str(home)]  # fmt: skip


@pytest.mark.parametrize(
    "crashes",
    [
        ["encode:3", "checkpoint:2", "manifest:2", "encode:2"],  # inside shards, at commits, after resumes
        ["store:2", "manifest:1", "checkpoint:1", "encode:1"],
    ],
)
def test_index_build_killed_at_many_points_is_byte_identical(
    tmp_path: Path, corpus: Path, tiny_st_dir: Path, crashes: list[str]
) -> None:
    miner(_build_args(corpus, tmp_path / "ref", tiny_st_dir))
    want = files(tmp_path / "ref" / "en")
    home = tmp_path / "home"
    for crash in crashes:
        assert miner(_build_args(corpus, home, tiny_st_dir), crash) == -signal.SIGKILL, crash
    miner(_build_args(corpus, home, tiny_st_dir))
    got = files(home / "en")
    assert sorted(got) == sorted(want)  # checkpoints and temp files are gone
    for name in want:
        if name == "manifest.json":
            assert _without_created(got[name]) == _without_created(want[name])
        else:
            assert got[name] == want[name], f"{name} differs after resume"


@pytest.fixture(scope="module")
def mine_setup(tmp_path_factory: pytest.TempPathFactory, tiny_whisper_dir: Path, tiny_st_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("kill_mine")
    rng = np.random.default_rng(9)
    audio = root / "audio"
    clips = [make_clip(rng, 0.8 + 0.2 * i) for i in range(5)]
    for i, c in enumerate(clips):
        write_audio(audio / f"clip{i}.flac", c)
    sf.write(audio / "tiny.wav", np.full(10, 0.1), 16000)
    (audio / "broken.flac").write_bytes(b"not audio")
    model = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=16, space_id="st-model-16", teacher=str(tiny_st_dir)
    )
    model_dir = model.save_pretrained(root / "samu")
    x = SpeechEncoder.from_pretrained(model_dir).encode(clips)
    vectors = np.concatenate([x[:3], np.random.default_rng(2).standard_normal((20, 16)).astype(np.float32)])
    (root / "c.txt").write_text("\n".join(f"sentence {i}" for i in range(23)) + "\n")
    np.save(root / "emb.npy", vectors)
    miner(["index", "build", "--name", "en", "--input", str(root / "c.txt"), "--embeddings", str(root / "emb.npy"),
           "--space-id", "st-model-16", "--home", str(root / "home")])  # fmt: skip
    return {"root": root, "audio": audio, "model": model_dir}


def test_mine_killed_at_many_points_is_byte_identical(tmp_path: Path, mine_setup: dict) -> None:
    def args(out: Path) -> list[str]:
        return ["mine", "--audio-dir", str(mine_setup["audio"]), "--text-db", "en", "--out", str(out),
                "--model", str(mine_setup["model"]), "-k", "1", "--home", str(mine_setup["root"] / "home")]  # fmt: skip

    miner(args(tmp_path / "ref"))
    out = tmp_path / "out"
    # before the 2nd file, mid cache entry, before the 1st file, after a cache entry, before pairs.jsonl
    for crash in ["embed_file:2", "atomic:1", "embed_file:1", "atomic:2", "atomic:3"]:
        assert miner(args(out), crash) == -signal.SIGKILL, crash
    miner(args(out))
    for name in ("pairs.tsv", "pairs.jsonl", "failures.tsv"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert "tiny.wav" in (out / "failures.tsv").read_text()


def test_a_damaged_mine_cache_entry_is_recomputed(tmp_path: Path, mine_setup: dict) -> None:
    args = ["mine", "--audio-dir", str(mine_setup["audio"]), "--text-db", "en", "--out", str(tmp_path / "o"),
            "--model", str(mine_setup["model"]), "-k", "1", "--home", str(mine_setup["root"] / "home")]  # fmt: skip
    miner(args)
    want = (tmp_path / "o" / "pairs.tsv").read_bytes()
    for npy in (tmp_path / "o" / "cache").rglob("*.npy"):
        npy.write_bytes(npy.read_bytes()[:60])  # truncated
    miner(args)
    assert (tmp_path / "o" / "pairs.tsv").read_bytes() == want
