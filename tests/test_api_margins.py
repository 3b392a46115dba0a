"""index.margins: r_y against a brute-force numpy oracle, file checks, and the online ratio margin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.build import build_index
from index.manifest import IndexFormatError, SpaceMismatchError
from index.margins import MARGIN_FILE, compute_reference_margins, load_reference_margins, ratio_margins


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_ry_matches_brute_force(tmp_path: Path, factory: str) -> None:
    rng = np.random.default_rng(0)
    db, ref = _unit(rng, 300, 8), _unit(rng, 40, 8)
    folder = tmp_path / "db"
    build_index(folder, db, store=False, space_id="s-8", factory=factory, shard_size=120, tune_queries=0)
    got = compute_reference_margins(folder, ref, k=3, reference_space_id="s-8")
    expected = np.sort(db @ ref.T, axis=1)[:, -3:].mean(axis=1)
    np.testing.assert_allclose(got.ry, expected, atol=1e-5)
    loaded = load_reference_margins(folder, 300)
    assert loaded is not None and loaded.k == 3 and loaded.reference_count == 40
    np.testing.assert_array_equal(loaded.ry, got.ry)
    # given vectors instead of reading the shards back: same result
    again = compute_reference_margins(folder, ref, k=3, db_vectors=db)
    np.testing.assert_allclose(again.ry, expected, atol=1e-5)


def test_bad_inputs_and_stale_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "db"
    build_index(folder, _unit(rng, 20, 4), store=False, space_id="s-4")
    assert load_reference_margins(folder, 20) is None
    with pytest.raises(ValueError, match="k=9"):
        compute_reference_margins(folder, _unit(rng, 5, 4), k=9)
    with pytest.raises(ValueError, match=r"expected \(n, 4\)"):
        compute_reference_margins(folder, _unit(rng, 5, 3), k=2)
    with pytest.raises(SpaceMismatchError):
        compute_reference_margins(folder, _unit(rng, 5, 4), k=2, reference_space_id="other-4")
    compute_reference_margins(folder, _unit(rng, 5, 4), k=2)
    with pytest.raises(IndexFormatError, match="recompute"):
        load_reference_margins(folder, 21)  # the index grew since
    (folder / MARGIN_FILE).write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match="unreadable"):
        load_reference_margins(folder, 20)


def test_ratio_margin_by_hand() -> None:
    cos = np.array([[0.9, 0.5]])
    got = ratio_margins(cos, rx=np.array([0.7]), ry=np.array([[0.5, 0.3]]))
    np.testing.assert_allclose(got, [[0.9 / 0.6, 0.5 / 0.5]], rtol=1e-6)
