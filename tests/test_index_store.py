"""index.store: id -> metadata rows, dedup lookups, errors naming the file."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from index.store import Store, StoreError, text_hash


def _text_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "id": i,
            "ext_id": f"c.txt:{i + 1}",
            "text": f"sentence {int(rng.integers(1e9))} #{i}",
            "source": "c.txt",
            "line": i + 1,
            "lang": "en",
        }
        for i in range(n)
    ]


def test_get_many_returns_each_row_in_the_order_asked(tmp_path):
    rows = _text_rows(2000)
    with Store.create(tmp_path / "s.sqlite") as store:
        store.add_many(rows)
    store = Store.open(tmp_path / "s.sqlite")
    assert len(store) == 2000
    assert store.kind == "text"
    order = np.random.default_rng(1).permutation(2000)[:1500].tolist() + [5, 5]
    got = store.get_many(order)
    assert [g["id"] for g in got] == order
    for g in got:
        assert g == rows[g["id"]]


def test_speech_rows_and_extra_keys_round_trip(tmp_path):
    with Store.create(tmp_path / "s.sqlite", kind="speech") as store:
        store.add_many(
            [
                {
                    "id": 0,
                    "ext_id": "rec1_0",
                    "path": "a.wav",
                    "start": 1.25,
                    "duration": 3.5,
                    "lang": "fr",
                    "recording_id": "rec1",
                },
                {"id": 1, "path": "b.flac", "start": 0.0, "duration": 2.0},
            ]
        )
        assert store.kind == "speech"
        assert store.get(0) == {
            "id": 0,
            "ext_id": "rec1_0",
            "path": "a.wav",
            "start": 1.25,
            "duration": 3.5,
            "lang": "fr",
            "recording_id": "rec1",
        }
        assert store.get(1) == {"id": 1, "path": "b.flac", "start": 0.0, "duration": 2.0}


def test_missing_id_raises_key_error_naming_it(tmp_path):
    with Store.create(tmp_path / "s.sqlite") as store:
        store.add_many(_text_rows(3))
        with pytest.raises(KeyError, match=r"\[7\]"):
            store.get_many([0, 7])


def test_insert_or_replace_keeps_one_row_per_id(tmp_path):
    with Store.create(tmp_path / "s.sqlite") as store:
        store.add_many(_text_rows(5))
        store.add_many([{"id": 2, "text": "new text"}])
        assert len(store) == 5
        assert store.get(2) == {"id": 2, "text": "new text"}


def test_find_text_is_exact_and_respects_below(tmp_path):
    with Store.create(tmp_path / "s.sqlite") as store:
        store.add_many([{"id": 0, "text": "a"}, {"id": 1, "text": "b"}, {"id": 2, "text": "a"}])
        assert store.find_text("a") == 0
        assert store.find_text("b") == 1
        assert store.find_text("A") is None
        assert store.find_text("b", below=1) is None
        assert store.find_texts(["b", "c", "a"]) == [1, None, 0]


def test_hash_collisions_are_resolved_by_comparing_texts(tmp_path, monkeypatch):
    import index.store as mod

    monkeypatch.setattr(mod, "text_hash", lambda t: 42)  # every text collides
    with Store.create(tmp_path / "s.sqlite") as store:
        store.add_many([{"id": 0, "text": "x"}, {"id": 1, "text": "y"}])
        assert store.find_texts(["y", "x", "z"]) == [1, 0, None]


def test_duplicates_are_recorded_and_counted(tmp_path):
    with Store.create(tmp_path / "s.sqlite") as store:
        store.add_many([{"id": 0, "text": "a"}])
        store.add_duplicates([{"seq": 3, "id": 0, "ext_id": "f:4"}, {"seq": 1, "id": 0, "ext_id": "f:2"}])
        assert store.duplicates_count() == 2
        assert store.duplicates_of(0) == [{"seq": 1, "ext_id": "f:2"}, {"seq": 3, "ext_id": "f:4"}]


def test_rolled_back_transaction_leaves_nothing(tmp_path):
    with Store.create(tmp_path / "s.sqlite") as store:
        store.begin()
        store.add_many(_text_rows(10))
        store.rollback()
        assert len(store) == 0


def test_garbage_file_gives_clear_error_naming_it(tmp_path):
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="store.sqlite"):
        Store.open(path)
    assert path.read_bytes() == b"this is not sqlite at all" * 100  # nothing overwritten


def test_corrupted_pages_give_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "store.sqlite"
    with Store.create(path) as store:
        store.add_many(_text_rows(3000))
    data = bytearray(path.read_bytes())
    data[8192:] = b"\xff" * (len(data) - 8192)  # keep the header and schema page, trash the rest
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="store.sqlite"):
        store = Store.open(path)
        store.get_many(range(3000))


def test_missing_file_and_foreign_database_are_refused(tmp_path):
    with pytest.raises(StoreError, match="missing"):
        Store.open(tmp_path / "nope.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="other.sqlite"):
        Store.open(other)
    with pytest.raises(FileExistsError, match="other.sqlite"):
        Store.create(other)


def test_readonly_store_refuses_writes(tmp_path):
    Store.create(tmp_path / "s.sqlite").close()
    store = Store.open(tmp_path / "s.sqlite", readonly=True)
    with pytest.raises(PermissionError, match="read-only"):
        store.add_many([{"id": 0, "text": "a"}])


def test_rows_need_a_non_negative_id(tmp_path):
    with Store.create(tmp_path / "s.sqlite") as store:
        with pytest.raises(ValueError, match="without 'id'"):
            store.add_many([{"text": "a"}])
        with pytest.raises(ValueError, match="negative"):
            store.add_many([{"id": -1, "text": "a"}])


def test_text_hash_is_stable():
    assert text_hash("hello") == text_hash("hello")
    assert text_hash("hello") != text_hash("hello ")
    assert -(2**63) <= text_hash("hello") < 2**63
