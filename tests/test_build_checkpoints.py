"""index.build checkpoints within a shard (issue 18, finding 11): a build killed with SIGKILL at any of many
points resumes from its last checkpoint, not from the last shard, and ends byte-identical to an uninterrupted
build; ``duplicates.seq`` is each duplicate's input position whatever the batches and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index.build import PARTIAL_DIR, ShardWriter
from index.manifest import IndexFormatError, Manifest
from index.store import Store

ROOT = Path(__file__).resolve().parents[1]
CREATED = "2024-01-01T00:00:00+00:00"
N = 1300

# One build in a child process. CRASH=<n> makes it SIGKILL itself after its n-th add() call; it prints the
# number of inputs the writer already held when it opened (committed + replayed from checkpoints).
BUILD_SCRIPT = r"""
import os, signal, sys
import faiss
import numpy as np
faiss.omp_set_num_threads(1)
import index.build as build

folder, factory = sys.argv[1], sys.argv[2]
crash = int(os.environ.get("CRASH", "0"))
rng = np.random.default_rng(0)
n = 1300
x = rng.normal(size=(n, 16)).astype(np.float32)
# every 7th item repeats an earlier text: duplicates interleave with new items inside each batch
rows = [{"id": f"c.txt:{i + 1}", "text": f"s{i - 5 if i % 7 == 6 else i}", "source": "c.txt", "line": i + 1}
        for i in range(n)]
w = build.ShardWriter(folder, 16, factory, space_id="t-16", encoder_id="enc", shard_size=500, dedup=True,
                      tune_queries=40, created=os.environ["CREATED"], checkpoint_rows=120, checkpoint_seconds=0)
skip = w.completed_count()
print(skip, flush=True)
calls = 0
for i in range(skip, n, 50):
    batch = rows[i:i + 50]
    new = ~w.duplicate_mask([r["text"] for r in batch])
    w.add(x[i:i + 50][new], batch)
    calls += 1
    if calls == crash:
        os.kill(os.getpid(), signal.SIGKILL)
w.close()
"""


def run_build(folder: Path, factory: str, crash: int = 0) -> tuple[int, int]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": "1",
        "CRASH": str(crash),
        "CREATED": CREATED,
    }
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_SCRIPT, str(folder), factory],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if not crash and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc.returncode, int(proc.stdout.split()[0])


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    out = {}
    for factory in ("Flat", "IVF4,Flat"):
        folder = tmp_path_factory.mktemp("ref") / "db"
        run_build(folder, factory)
        out[factory] = folder_bytes(folder)
    return out


@pytest.mark.parametrize(
    ("factory", "crashes"),
    [
        ("Flat", [2, 5, 7]),  # inside the first shard, before and after checkpoints
        ("Flat", [11, 3, 1, 9]),  # across the first shard's commit, then small steps
        ("Flat", [20, 4]),
        ("IVF4,Flat", [3, 6]),  # before training, then after
        ("IVF4,Flat", [13, 12]),
    ],
)
def test_sigkill_at_many_points_resumes_from_checkpoints_byte_identical(
    tmp_path, reference, factory, crashes
):
    folder = tmp_path / "db"
    held = 0
    for crash in crashes:
        rc, start = run_build(folder, factory, crash)
        assert rc == -signal.SIGKILL
        assert start >= held  # never back to an earlier point
        held = start
        assert not Manifest.load(folder).complete
    _, start = run_build(folder, factory)
    manifest = json.loads((folder / "manifest.json").read_text())
    committed_before = start  # what the last run found: committed shards + checkpoints
    assert committed_before >= held
    got, want = folder_bytes(folder), reference[factory]
    assert sorted(got) == sorted(want)  # the .partial folder is gone too
    for name in want:
        assert got[name] == want[name], f"{name} differs after resume"
    assert manifest["complete"]


def test_a_kill_inside_the_first_shard_keeps_the_checkpointed_work(tmp_path):
    folder = tmp_path / "db"
    rc, start = run_build(folder, "Flat", crash=7)  # 350 inputs given, no shard committed (500 per shard)
    assert rc == -signal.SIGKILL and start == 0
    assert Manifest.load(folder).shards == []
    _, start = run_build(folder, "Flat")
    assert start >= 240  # two checkpoints of 120 rows: not from zero (the finding: the rerun started at 0)


def test_duplicates_seq_is_the_input_position(reference, tmp_path):
    folder = tmp_path / "db"
    folder.mkdir()
    for name, data in reference["Flat"].items():
        (folder / name).write_bytes(data)
    with Store.open(folder / "store.sqlite") as store:
        seqs = [d["seq"] for i in range(len(store)) for d in store.duplicates_of(i)]
        lines = [d["line"] for i in range(len(store)) for d in store.duplicates_of(i)]
    assert len(seqs) == sum(1 for i in range(N) if i % 7 == 6)
    assert seqs == [line - 1 for line in lines]  # seq = 0-based input position = line - 1


def test_duplicates_seq_within_one_batch(tmp_path):
    """Duplicates between new items of one add() call keep their own positions (they used to be numbered
    after the batch's new items)."""
    rows = [{"text": t, "line": i + 1} for i, t in enumerate(["a", "a", "b", "c", "b"])]
    with ShardWriter(tmp_path / "db", 4, "Flat", space_id="t-4", dedup=True) as w:
        w.add(np.eye(4, dtype=np.float32)[:3], rows)
    with Store.open(tmp_path / "db" / "store.sqlite") as store:
        dups = store.duplicates_of(0) + store.duplicates_of(1)
    assert [(d["seq"], d["line"]) for d in dups] == [(1, 2), (4, 5)]


def test_a_corrupt_checkpoint_names_the_file(tmp_path):
    folder = tmp_path / "db"
    run_build(folder, "Flat", crash=5)
    files = sorted((folder / PARTIAL_DIR).glob("*.npz"))
    assert files
    files[0].write_bytes(b"not a checkpoint")
    with pytest.raises(IndexFormatError, match=files[0].name):
        ShardWriter(folder, 16, "Flat", space_id="t-16", encoder_id="enc", shard_size=500, dedup=True,
                    tune_queries=40, created=CREATED)  # fmt: skip


def test_a_missing_checkpoint_drops_the_later_ones_and_the_build_still_matches(tmp_path, reference):
    folder = tmp_path / "db"
    run_build(folder, "Flat", crash=7)
    files = sorted((folder / PARTIAL_DIR).glob("*.npz"))
    assert len(files) >= 2
    files[0].unlink()  # a gap: the later checkpoints cannot be replayed
    _, start = run_build(folder, "Flat")
    assert start == 0  # nothing committed, nothing replayed: re-encoded from the start
    assert folder_bytes(folder) == reference["Flat"]
