"""miner.databases: how a served database's shards are loaded (RAM or memory-mapped)."""

from __future__ import annotations

import numpy as np
import pytest

from index.build import build_index
from miner import databases
from miner.databases import choose_mmap, open_database


@pytest.fixture()
def db_folder(tmp_path):
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((40, 8)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    rows = [{"text": f"sentence {i}", "lang": "en"} for i in range(40)]
    build_index(tmp_path / "en", xb, rows, space_id="t-8", shard_size=16, kind="text")
    return tmp_path / "en"


def test_explicit_modes_and_a_bad_mode(db_folder) -> None:
    assert choose_mmap(db_folder, "mmap") is True and choose_mmap(db_folder, "ram") is False
    with pytest.raises(ValueError, match="load mode 'disk'.*auto, ram, mmap"):
        choose_mmap(db_folder, "disk")


def test_auto_reads_into_ram_only_when_the_shards_fit_in_half_the_free_memory(db_folder, monkeypatch) -> None:
    size = sum(p.stat().st_size for p in db_folder.glob("*.faiss"))
    assert size > 0
    monkeypatch.setattr(databases, "available_memory_bytes", lambda: 2 * size)
    assert choose_mmap(db_folder) is False
    monkeypatch.setattr(databases, "available_memory_bytes", lambda: 2 * size - 2)
    assert choose_mmap(db_folder) is True


@pytest.mark.parametrize("load", ["ram", "mmap"])
def test_both_modes_give_the_same_results(db_folder, load) -> None:
    db = open_database(db_folder, load=load)
    try:
        q = np.asarray(db.index.search(np.eye(8, dtype=np.float32)[:3], 5)[1])
        ref = open_database(db_folder, load="ram")
        np.testing.assert_array_equal(q, ref.index.search(np.eye(8, dtype=np.float32)[:3], 5)[1])
        ref.close()
    finally:
        db.close()


def test_available_memory_is_positive() -> None:
    assert databases.available_memory_bytes() > 0
