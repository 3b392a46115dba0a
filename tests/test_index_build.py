"""index.build: shard writing, validation, dedup, and kill -9 + resume giving a byte-identical database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from index.build import ShardWriter, build_index
from index.manifest import IndexFormatError, Manifest
from index.sharded import ShardedIndex
from index.store import Store
from index.vectors import prepare_vectors

ROOT = Path(__file__).resolve().parents[1]
CREATED = "2024-01-01T00:00:00+00:00"


@pytest.fixture(autouse=True)
def _one_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


# A build run in a child process; CRASH=<point>:<n> makes it SIGKILL itself at that point.
BUILD_SCRIPT = r"""
import os, signal, sys
import faiss
import numpy as np
faiss.omp_set_num_threads(1)
import index.build as build
from index.manifest import Manifest
from index.store import Store

folder, factory = sys.argv[1], sys.argv[2]
point, _, at = os.environ.get("CRASH", "none:0").partition(":")
at = int(at)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "before_manifest":  # the shard file and its store transaction are committed, the manifest not
    save = Manifest.save
    def patched(self, f):
        if len(self.shards) == at + 1 and not self.complete:
            die()
        return save(self, f)
    Manifest.save = patched
elif point == "after_manifest":
    save = Manifest.save
    def patched(self, f):
        out = save(self, f)
        if len(self.shards) == at:
            die()
        return out
    Manifest.save = patched
elif point == "mid_store":  # inside a shard's open store transaction
    add_many = Store.add_many
    calls = [0]
    def patched(self, rows):
        out = add_many(self, rows)
        calls[0] += 1
        if calls[0] == at:
            die()
        return out
    Store.add_many = patched
elif point == "mid_write":  # halfway through writing an index file (a temp file is left behind)
    write_index = faiss.write_index
    calls = [0]
    def patched(index, path):
        calls[0] += 1
        if calls[0] == at:
            with open(path, "wb") as f:
                f.write(b"partial")
            die()
        return write_index(index, path)
    faiss.write_index = patched

rng = np.random.default_rng(0)
n = 1300
centers = rng.normal(size=(10, 16))
x = centers[rng.integers(0, 10, n)] + rng.normal(size=(n, 16))
rows = [{"id": f"c.txt:{i + 1}", "text": f"sentence {i % 1000}", "source": "c.txt", "line": i + 1, "lang": "en"}
        for i in range(n)]  # items 1000.. repeat earlier texts: 300 duplicates
w = build.ShardWriter(folder, 16, factory, space_id="t-16", encoder_id="enc", shard_size=200, dedup=True,
                      tune_queries=50, created=os.environ.get("CREATED") or None)
skip = w.completed_count()
for i in range(skip, n, 90):
    w.add(x[i:i + 90], rows[i:i + 90])
w.close()
"""


def run_build(folder: Path, factory: str, crash: str | None = None, created: str = CREATED) -> int:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": "1",
        "CRASH": crash or "none:0",
        "CREATED": created,
    }
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_SCRIPT, str(folder), factory],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if crash is None and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc.returncode


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Uninterrupted builds, one per factory."""
    out = {}
    for factory in ("Flat", "IVF8,Flat"):
        folder = tmp_path_factory.mktemp("ref") / "db"
        run_build(folder, factory)
        out[factory] = folder_bytes(folder)
    return out


@pytest.mark.parametrize(
    ("factory", "crashes"),
    [
        ("Flat", ["before_manifest:2"]),
        ("Flat", ["mid_store:4"]),
        ("Flat", ["after_manifest:1", "mid_write:2", "before_manifest:3"]),
        ("IVF8,Flat", ["mid_write:1"]),  # while writing trained.faiss
        ("IVF8,Flat", ["mid_write:2"]),  # while writing the first shard, after training
        ("IVF8,Flat", ["before_manifest:1", "mid_store:3"]),
    ],
)
def test_killed_and_resumed_build_is_byte_identical(tmp_path, reference, factory, crashes):
    folder = tmp_path / "db"
    for crash in crashes:
        assert run_build(folder, factory, crash) == -signal.SIGKILL
        assert not Manifest.load(folder).complete
    run_build(folder, factory)
    got = folder_bytes(folder)
    want = reference[factory]
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs after resume"


def test_reference_database_content(reference, tmp_path):
    """The database the kill tests compare against is itself right: dedup, ids, store rows, tuning."""
    folder = tmp_path / "db"
    folder.mkdir()
    for name, data in reference["IVF8,Flat"].items():
        (folder / name).write_bytes(data)
    m = Manifest.load(folder)
    assert m.complete and m.created == CREATED
    assert m.ntotal == 1000 and m.inputs == 1300 and [s.count for s in m.shards] == [200] * 5
    assert m.nprobe is not None and m.build["tuning"]["recall_at_k"] >= 0.95
    with Store.open(folder / "store.sqlite") as store:
        assert len(store) == 1000 and store.duplicates_count() == 300
        assert store.get(17)["text"] == "sentence 17" and store.get(17)["ext_id"] == "c.txt:18"
        assert store.duplicates_of(17) == [
            {"seq": 1017, "ext_id": "c.txt:1018", "source": "c.txt", "line": 1018}
        ]
    assert set(reference["IVF8,Flat"]) == {"manifest.json", "store.sqlite", "trained.faiss"} | {
        f"shard_0000{i}.faiss" for i in range(5)
    }


def test_resume_keeps_the_first_runs_created_time(tmp_path):
    folder = tmp_path / "db"
    assert run_build(folder, "Flat", "after_manifest:1", created="") == -signal.SIGKILL
    first = Manifest.load(folder).created
    run_build(folder, "Flat", created="")
    assert Manifest.load(folder).created == first


def test_resume_with_other_settings_is_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 8))
    w = ShardWriter(tmp_path / "db", 8, space_id="a-8", store=False, shard_size=20)
    w.add(x)
    w.abort()
    with pytest.raises(IndexFormatError, match="space_id.*'a-8'.*'b-8'"):
        ShardWriter(tmp_path / "db", 8, space_id="b-8", store=False, shard_size=20)
    with pytest.raises(IndexFormatError, match="build.shard_size"):
        ShardWriter(tmp_path / "db", 8, space_id="a-8", store=False, shard_size=30)
    w = ShardWriter(tmp_path / "db", 8, space_id="a-8", store=False, shard_size=20)
    assert w.completed_count() == 40  # two committed shards; the 10 uncommitted vectors are re-fed
    w.add(x[40:])
    assert w.close().ntotal == 50


def test_completed_database_refuses_more_vectors(tmp_path):
    build_index(tmp_path / "db", np.ones((3, 4)), store=False, space_id="t-4")
    w = ShardWriter(tmp_path / "db", 4, space_id="t-4", store=False)
    assert w.completed_count() == 3
    with pytest.raises(ValueError, match="complete"):
        w.add(np.ones((1, 4)))


def test_non_empty_folder_without_manifest_is_refused(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        ShardWriter(tmp_path / "db", 4, space_id="t-4")
    assert (tmp_path / "db" / "notes.txt").read_text() == "mine"


def test_corrupt_manifest_is_reported_and_nothing_overwritten(tmp_path):
    build_index(tmp_path / "db", np.ones((3, 4)), [{"text": "a"}] * 3, space_id="t-4")
    (tmp_path / "db" / "manifest.json").write_text("{broken")
    before = folder_bytes(tmp_path / "db")
    with pytest.raises(IndexFormatError, match="manifest.json"):
        ShardWriter(tmp_path / "db", 4, space_id="t-4")
    with pytest.raises(IndexFormatError, match="manifest.json"):
        ShardedIndex.load(tmp_path / "db")
    assert folder_bytes(tmp_path / "db") == before


def test_prepare_vectors_normalises_a_copy_and_validates():
    x = np.array([[3.0, 4.0], [0.0, 2.0]])
    y = prepare_vectors(x, 2)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)
    assert x[0, 0] == 3.0  # the input is not modified
    with pytest.raises(ValueError, match=r"shape \(2, 2\); expected \(n, 3\)"):
        prepare_vectors(x, 3)
    with pytest.raises(ValueError, match="row 1 has NaN"):
        prepare_vectors([[1.0, 0.0], [np.inf, 0.0]], 2)
    with pytest.raises(ValueError, match="row 0 is all zeros"):
        prepare_vectors([[0.0, 0.0]], 2)


def test_rows_must_match_vectors(tmp_path):
    w = ShardWriter(tmp_path / "db", 4, space_id="t-4")
    with pytest.raises(ValueError, match="rows are required"):
        w.add(np.ones((2, 4)))
    with pytest.raises(ValueError, match="2 vectors but 3 rows"):
        w.add(np.ones((2, 4)), [{"text": "a"}] * 3)
    assert w.ntotal == 0  # a refused batch changes nothing
    w.abort()
    w = ShardWriter(tmp_path / "vec", 4, space_id="t-4", store=False)
    with pytest.raises(ValueError, match="no store"):
        w.add(np.ones((1, 4)), [{"text": "a"}])
    w.abort()


def test_dedup_with_prefiltered_vectors_gives_the_same_database(tmp_path):
    rng = np.random.default_rng(3)
    texts = [f"t{int(i)}" for i in rng.integers(0, 40, 120)]
    vec_of = {t: rng.normal(size=8) for t in set(texts)}
    rows = [{"id": f"f:{i}", "text": t} for i, t in enumerate(texts)]
    x = np.array([vec_of[t] for t in texts])
    kw = {"space_id": "t-8", "dedup": True, "shard_size": 16, "created": CREATED, "name": "db"}
    with ShardWriter(tmp_path / "a", 8, **kw) as w:
        for i in range(0, 120, 25):
            w.add(x[i : i + 25], rows[i : i + 25])
    with ShardWriter(tmp_path / "b", 8, **kw) as w:
        for i in range(0, 120, 25):
            dup = w.duplicate_mask(texts[i : i + 25])
            w.add(x[i : i + 25][~dup], rows[i : i + 25])  # encode only the new texts
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")
    with Store.open(tmp_path / "a" / "store.sqlite") as store:
        n_unique = len(set(texts))
        assert len(store) == n_unique and store.duplicates_count() == 120 - n_unique
        kept = store.get_many(range(n_unique))
        assert [r["text"] for r in kept] == list(dict.fromkeys(texts))  # first occurrences, in order
    index = ShardedIndex.load(tmp_path / "a")
    q = prepare_vectors(np.array([vec_of[t] for t in dict.fromkeys(texts)]), 8)
    assert index.search(q, 1)[1][:, 0].tolist() == list(range(n_unique))


def test_auto_factory_and_speech_rows(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 8))
    rows = [
        {"id": f"rec_{i}", "recording_id": "rec", "path": "a.wav", "start": i * 1.0, "duration": 1.0}
        for i in range(30)
    ]
    m = build_index(
        tmp_path / "db",
        x,
        rows,
        space_id="t-8",
        kind="speech",
        factory="auto",
        expected_count=30,
        memory_budget_bytes=2**30,
    )
    assert m.factory == "Flat" and m.kind == "speech"
    with Store.open(tmp_path / "db" / "store.sqlite") as store:
        assert store.kind == "speech"
        assert store.get(4) == {
            "id": 4,
            "ext_id": "rec_4",
            "path": "a.wav",
            "start": 4.0,
            "duration": 1.0,
            "recording_id": "rec",
        }


def test_ivf_with_too_few_vectors_explains(tmp_path):
    w = ShardWriter(tmp_path / "db", 8, "IVF64,Flat", space_id="t-8", store=False)
    w.add(np.random.default_rng(0).normal(size=(10, 8)))
    with pytest.raises(ValueError, match="at least 64 training vectors"):
        w.close()
