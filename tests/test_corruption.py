"""A truncated or corrupted shard, store or manifest gives a clear error naming the file, and nothing in the
folder is overwritten (issue 18): opening, verifying, serving and resuming a build all refuse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from index.build import ShardWriter, build_index
from index.manifest import IndexFormatError, verify
from miner.databases import open_database


def _truncate(name: str, keep: int) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        path = folder / name
        path.write_bytes(path.read_bytes()[:keep])
        return name

    return damage


def _garbage(name: str) -> Callable[[Path], str]:
    def damage(folder: Path) -> str:
        (folder / name).write_bytes(b"\x00garbage" * 64)
        return name

    return damage


def _field(folder: Path) -> str:
    path = folder / "manifest.json"
    path.write_text(path.read_text().replace('"dim": 8', '"dim": "x"'))
    return "manifest.json"


DAMAGE = {
    "shard truncated": _truncate("shard_00001.faiss", 100),
    "shard garbage": _garbage("shard_00000.faiss"),
    "store truncated": _truncate("store.sqlite", 2000),
    "store garbage": _garbage("store.sqlite"),
    "manifest truncated": _truncate("manifest.json", 50),
    "manifest garbage": _garbage("manifest.json"),
    "manifest bad field": _field,
}


def _build(folder: Path, complete: bool = True) -> None:
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    rows = [{"text": f"t{i}"} for i in range(50)]
    if complete:
        build_index(folder, x, rows, space_id="s-8", shard_size=20)
        return
    w = ShardWriter(folder, 8, "Flat", space_id="s-8", shard_size=20)
    w.add(x, rows)  # two shards committed, the third open
    w.abort()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_database_is_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "db"
    _build(folder)
    name = DAMAGE[case](folder)
    before = _snapshot(folder)
    with pytest.raises(IndexFormatError, match=name):
        db = open_database(folder, "db")
        db.search(np.ones((1, 8), np.float32), 3)  # shards and store are read by now
    problems = verify(folder)
    assert problems and any(name in p for p in problems), problems
    assert _snapshot(folder) == before


@pytest.mark.parametrize(
    "case", ["store garbage", "manifest truncated", "manifest garbage", "manifest bad field"]
)
def test_resuming_a_damaged_build_is_refused_and_overwrites_nothing(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "db"
    _build(folder, complete=False)
    name = DAMAGE[case](folder)
    before = _snapshot(folder)
    with pytest.raises(IndexFormatError, match=name):
        ShardWriter(folder, 8, "Flat", space_id="s-8", shard_size=20)
    assert _snapshot(folder) == before


def test_a_damaged_database_stops_the_server_naming_the_file(tmp_path: Path) -> None:
    from miner.databases import plan_databases

    _build(tmp_path / "db")
    _truncate("manifest.json", 50)(tmp_path / "db")
    with pytest.raises(IndexFormatError, match="manifest.json"):
        plan_databases(tmp_path, ["db"], None)
