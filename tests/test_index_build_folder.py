"""Folder state of a database build (index.build_folder): new, resumed, appended, damaged."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from index.build_folder import load_trained, open_build_folder, write_index_atomic
from index.manifest import TRAINED_FILE, IndexFormatError, Manifest, ShardInfo


def manifest(factory: str = "Flat", **build: object) -> Manifest:
    nlist = 8 if factory.startswith("IVF") else None
    return Manifest(
        name="db", kind="text", dim=4, space_id="t-4", encoder_id="enc", factory=factory, nlist=nlist,
        build={"shard_size": 10, **build},
    )  # fmt: skip


def test_new_folder_gets_the_wanted_manifest_and_loses_temp_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / ".shard_00000.faiss.123.tmp").write_bytes(b"half")
    got = open_build_folder(folder, manifest())
    assert got.factory == "Flat" and Manifest.load(folder).build == {"shard_size": 10}
    assert not list(folder.glob(".*.tmp"))


def test_a_folder_with_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"not empty \(\['notes.txt'\]\).*choose an empty folder"):
        open_build_folder(tmp_path, manifest())


def test_resume_needs_the_same_settings(tmp_path: Path) -> None:
    open_build_folder(tmp_path, manifest())
    again = open_build_folder(tmp_path, manifest())
    assert again.build == {"shard_size": 10} and not again.complete
    with pytest.raises(
        IndexFormatError, match=r"factory: folder has 'Flat', asked 'IVF8,Flat'.*same settings"
    ):
        open_build_folder(tmp_path, manifest("IVF8,Flat"))
    with pytest.raises(IndexFormatError, match=r"build.shard_size: folder has 10, asked 20"):
        open_build_folder(tmp_path, manifest(shard_size=20))


def test_append_reopens_a_complete_database_after_its_items(tmp_path: Path) -> None:
    done = open_build_folder(tmp_path, manifest())
    done.shards.append(ShardInfo(file="shard_00000.faiss", offset=0, count=7, sha256="x", inputs=9))
    done.complete = True
    done.save(tmp_path)
    assert open_build_folder(tmp_path, manifest()).complete  # without append it stays finished
    reopened = open_build_folder(tmp_path, manifest(), append=True)
    assert not reopened.complete and reopened.extra["append_base"] == 9
    assert Manifest.load(tmp_path).extra["append_base"] == 9  # saved: a killed append resumes as an append


def test_trained_index_fresh_missing_or_damaged(tmp_path: Path) -> None:
    flat = load_trained(tmp_path, manifest(), "Flat", 4)
    assert flat is not None and flat.is_trained and flat.ntotal == 0
    ivf = manifest("IVF8,Flat")
    assert load_trained(tmp_path, ivf, "IVF8,Flat", 4) is None  # not trained yet
    ivf.shards.append(ShardInfo(file="shard_00000.faiss", offset=0, count=1, sha256="x"))
    with pytest.raises(IndexFormatError, match="missing but shards exist.*rebuild"):
        load_trained(tmp_path, ivf, "IVF8,Flat", 4)
    (tmp_path / TRAINED_FILE).write_bytes(b"not an index")
    with pytest.raises(IndexFormatError, match="cannot read the trained index.*rebuild the database"):
        load_trained(tmp_path, ivf, "IVF8,Flat", 4)
    trained = faiss.index_factory(4, "IVF8,Flat", faiss.METRIC_INNER_PRODUCT)
    trained.train(np.random.default_rng(0).standard_normal((400, 4)).astype(np.float32))
    write_index_atomic(trained, tmp_path / TRAINED_FILE)
    back = load_trained(tmp_path, ivf, "IVF8,Flat", 4)
    assert back is not None and back.is_trained and not list(tmp_path.glob(".*.tmp"))
