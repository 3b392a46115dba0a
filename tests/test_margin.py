"""Margin functions and neighbourhood means (miner.margin), checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from miner.margin import Margin, knn_mean, margin_scores, parse_margin


def test_margin_values_by_hand() -> None:
    # cos = 0.75, mean = 0.5: ratio 0.75 / 0.5 = 1.5, distance 0.75 - 0.5 = 0.25, absolute 0.75.
    assert Margin.RATIO.apply(0.75, 0.5) == 1.5
    assert Margin.DISTANCE.apply(0.75, 0.5) == 0.25
    assert Margin.ABSOLUTE.apply(0.75, 0.5) == 0.75


def test_margin_is_a_str_enum_with_the_laser_names() -> None:
    assert [m.value for m in Margin] == ["ratio", "distance", "absolute"]
    assert Margin("ratio") is Margin.RATIO
    assert Margin.DISTANCE == "distance"


def test_parse_margin_accepts_names_and_members_and_lists_choices() -> None:
    assert parse_margin("Distance") is Margin.DISTANCE
    assert parse_margin(Margin.ABSOLUTE) is Margin.ABSOLUTE
    with pytest.raises(ValueError, match="unknown margin 'cosine'.*ratio, distance, absolute"):
        parse_margin("cosine")


def test_absolute_margin_broadcasts_to_the_mean_shape() -> None:
    out = Margin.ABSOLUTE.apply(np.array([[0.5], [0.25]]), np.zeros((2, 3)))
    np.testing.assert_array_equal(out, [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])


def test_knn_mean_by_hand_and_clips_k() -> None:
    sims = np.array([[0.75, 0.5, 0.25], [1.0, 0.0, -0.25]], dtype=np.float32)
    # all three columns: (0.75 + 0.5 + 0.25) / 3 = 0.5 ; (1 + 0 - 0.25) / 3 = 0.25
    np.testing.assert_allclose(knn_mean(sims), [0.5, 0.25])
    # k = 2: (0.75 + 0.5) / 2 = 0.625 ; (1 + 0) / 2 = 0.5
    np.testing.assert_array_equal(knn_mean(sims, k=2), [0.625, 0.5])
    # k above the number of columns uses all of them
    np.testing.assert_array_equal(knn_mean(sims, k=10), knn_mean(sims))
    assert knn_mean(sims).dtype == np.float64


@pytest.mark.parametrize(
    ("sims", "k", "match"),
    [
        (np.zeros(3, np.float32), None, "2-D"),
        (np.zeros((2, 0), np.float32), None, "no column"),
        (np.zeros((2, 2), np.float32), 0, "k must be >= 1"),
    ],
)
def test_knn_mean_rejects_bad_input(sims: np.ndarray, k: int | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        knn_mean(sims, k)


def test_margin_scores_vectorised_by_hand() -> None:
    # two sources with r_x = [0.5, 0.25], each with two candidates whose r_y are gathered per candidate
    cos = np.array([[0.75, 0.5], [0.5, 0.25]], dtype=np.float32)
    r_x = np.array([0.5, 0.25])[:, None]
    r_y = np.array([[0.5, 0.25], [0.75, 0.25]])
    # means (r_x + r_y) / 2 = [[0.5, 0.375], [0.5, 0.25]]
    np.testing.assert_allclose(margin_scores(cos, r_x, r_y, "ratio"), [[1.5, 0.5 / 0.375], [1.0, 1.0]])
    np.testing.assert_array_equal(margin_scores(cos, r_x, r_y, "distance"), [[0.25, 0.125], [0.0, 0.0]])
    np.testing.assert_array_equal(margin_scores(cos, r_x, r_y, "absolute"), cos.astype(np.float64))
    # default margin is ratio
    np.testing.assert_array_equal(margin_scores(cos, r_x, r_y), margin_scores(cos, r_x, r_y, Margin.RATIO))
