"""index.manifest: JSON round trip, clear errors naming the file, verify()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index.build import build_index
from index.manifest import (
    MANIFEST_FILE,
    IndexFormatError,
    Manifest,
    ShardInfo,
    SpaceMismatchError,
    check_space,
    verify,
)


def _manifest() -> Manifest:
    return Manifest(
        name="db",
        kind="text",
        dim=8,
        space_id="t-8",
        encoder_id="enc",
        factory="Flat",
        shards=[
            ShardInfo("shard_00000.faiss", 0, 3, "ab"),
            ShardInfo("shard_00001.faiss", 3, 2, "cd", inputs=4),
        ],
        created="2024-01-01T00:00:00+00:00",
        extra={"note": "x"},
    )


def test_save_load_round_trip(tmp_path):
    m = _manifest()
    m.save(tmp_path)
    back = Manifest.load(tmp_path)
    assert back == m
    assert back.ntotal == 5
    assert back.inputs == 7
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(IndexFormatError, match=str(tmp_path / MANIFEST_FILE)):
        Manifest.load(tmp_path)


def test_corrupt_json_names_the_file(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text('{"name": "db", ')
    with pytest.raises(IndexFormatError, match=f"{MANIFEST_FILE}.*not valid JSON"):
        Manifest.load(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 99}, "format_version 99"),
        ({"kind": "video"}, "kind 'video'"),
        ({"dim": -3}, "dim -3"),
        ({"shards": [{"file": "a", "offset": 5, "count": 1, "sha256": "x"}]}, "offset 5"),
        ({"shards": [{"file": "a", "offset": 0, "count": 1}]}, "malformed"),
    ],
)
def test_incompatible_manifest_is_refused(tmp_path, change, message):
    data = _manifest().to_dict()
    data.update(change)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match=message):
        Manifest.load(tmp_path)


def test_missing_keys_are_named(tmp_path):
    data = _manifest().to_dict()
    del data["space_id"]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match="space_id"):
        Manifest.load(tmp_path)


def test_verify_names_missing_and_corrupt_shards(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    rows = [{"text": f"s{i}"} for i in range(50)]
    build_index(tmp_path / "db", x, rows, space_id="t-8", shard_size=20)
    assert verify(tmp_path / "db") == []
    shard = tmp_path / "db" / "shard_00001.faiss"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    (tmp_path / "db" / "shard_00002.faiss").unlink()
    problems = verify(tmp_path / "db")
    assert len(problems) == 2
    assert "shard_00001.faiss" in problems[0] and "checksum mismatch" in problems[0]
    assert "shard_00002.faiss" in problems[1] and "missing" in problems[1]


def test_verify_reports_a_corrupt_store(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32)
    build_index(tmp_path / "db", x, [{"text": str(i)} for i in range(10)], space_id="t-8")
    (tmp_path / "db" / "store.sqlite").write_bytes(b"garbage" * 1000)
    problems = verify(tmp_path / "db")
    assert len(problems) == 1 and "store.sqlite" in problems[0]


def test_check_space_names_both_spaces():
    check_space("labse-768", "labse-768")
    with pytest.raises(SpaceMismatchError, match="'e5-small-384'.*'labse-768'") as err:
        check_space("labse-768", "e5-small-384")
    assert isinstance(err.value, ValueError)
