"""Language re-balancing (paper Eq. 3) and the resumable sampler."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from miner.train.data import bucket_batches
from miner.train.sampling import LanguageSampler, epoch_counts, language_probs


def test_eq3_hand_computed() -> None:
    # p = (0.9, 0.1); alpha 0.5: q_a = sqrt(.9) / (sqrt(.9) + sqrt(.1)) = 3 / (3 + 1)
    q = language_probs({"a": 900, "b": 100}, alpha=0.5)
    assert q["a"] == pytest.approx(0.75) and q["b"] == pytest.approx(0.25)
    assert language_probs({"a": 900, "b": 100}, 1.0) == pytest.approx({"a": 0.9, "b": 0.1})
    assert language_probs({"a": 900, "b": 100}, 0.0) == pytest.approx({"a": 0.5, "b": 0.5})
    # The paper's alpha = 0.05 nearly flattens a 9:1 split: 0.9^.05 = 0.994746, 0.1^.05 = 0.891251.
    q = language_probs({"a": 900, "b": 100}, 0.05)
    assert q["a"] == pytest.approx(0.994746 / (0.994746 + 0.891251), abs=1e-6)


def test_eq3_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="counts must be > 0"):
        language_probs({"a": 0}, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        language_probs({"a": 1}, 1.5)


def test_epoch_counts_sum_to_epoch_size() -> None:
    assert epoch_counts({"a": 900, "b": 100}, 0.5, 1000) == {"a": 750, "b": 250}
    c = epoch_counts({"x": 5, "y": 3, "z": 1}, 0.3, 10)
    assert sum(c.values()) == 10 and all(v > 0 for v in c.values())


def test_epoch_up_samples_by_repeating_and_down_samples_without_replacement() -> None:
    langs = ["a"] * 900 + ["b"] * 100
    s = LanguageSampler(langs, alpha=0.5, seed=3)
    epoch = s.draw_epoch(0)
    assert len(epoch) == 1000
    a_rows = epoch[epoch < 900]
    b_rows = epoch[epoch >= 900]
    assert len(a_rows) == 750 and len(np.unique(a_rows)) == 750  # down-sampled: distinct rows
    reps = Counter(b_rows.tolist())
    assert len(b_rows) == 250 and set(reps) == set(range(900, 1000))  # every b utterance at least twice
    assert sorted(Counter(reps.values()).items()) == [(2, 50), (3, 50)]  # 250 = 2 x 100 + 50 drawn
    assert not np.array_equal(s.draw_epoch(1), epoch)  # a new draw per epoch
    np.testing.assert_array_equal(LanguageSampler(langs, 0.5, seed=3).draw_epoch(0), epoch)  # seeded


def test_sampler_resumes_exactly_with_a_batcher() -> None:
    rng = np.random.default_rng(0)
    langs = rng.choice(["en", "fr", "sw"], size=60, p=[0.7, 0.25, 0.05]).tolist()
    dur = rng.uniform(0.5, 5.0, size=60)

    def batcher(idx: np.ndarray, r: np.random.Generator) -> list[np.ndarray]:
        return bucket_batches(idx, dur, 8.0, r)

    full = LanguageSampler(langs, 0.05, seed=1, batcher=batcher)
    reference = [b.tolist() for b in itertools.islice(iter(full), 40)]  # crosses epoch boundaries
    first = LanguageSampler(langs, 0.05, seed=1, batcher=batcher)
    it = iter(first)
    head = [next(it).tolist() for _ in range(17)]
    state = first.state_dict()
    resumed = LanguageSampler(langs, 0.05, seed=1, batcher=batcher)
    resumed.load_state_dict(state)
    tail = [b.tolist() for b in itertools.islice(iter(resumed), 23)]
    assert head + tail == reference
    assert full.epoch >= 1
    with pytest.raises(ValueError, match="does not match"):
        LanguageSampler(langs, 0.5, seed=1).load_state_dict(state)


def test_bucket_batches_respect_the_padded_budget() -> None:
    dur = np.array([1.0, 4.0, 2.0, 2.5, 9.0, 0.5, 3.0])
    batches = bucket_batches(np.arange(7), dur, 6.0, np.random.default_rng(0))
    flat = sorted(int(i) for b in batches for i in b)
    assert flat == list(range(7))
    for b in batches:
        assert len(b) * dur[b].max() <= 6.0 or len(b) == 1  # 9 s clip alone in its batch
    assert any(len(b) == 1 and dur[b[0]] == 9.0 for b in batches)
