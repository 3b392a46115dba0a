"""Language re-balancing (paper Eq. 3) and a seeded, resumable sampler of training batches.

    p_l = n_l / N,    q_l = p_l^alpha / sum_l' p_l'^alpha

alpha = 1 keeps the natural distribution, alpha = 0 makes languages uniform; the paper uses 0.05. One epoch
draws ``round(q_l * E)`` utterances of language l (E = epoch size, largest-remainder rounding so the counts
add up to E): a language with fewer utterances than that is up-sampled by repeating every utterance as often
as it fits and drawing the rest without replacement; a larger one is down-sampled by a draw without
replacement. Every epoch is a pure function of (seed, epoch), so a resumed run replays the same batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["LanguageSampler", "epoch_counts", "language_probs"]

Batcher = Callable[[np.ndarray, np.random.Generator], list[np.ndarray]]


def language_probs(counts: Mapping[str, int], alpha: float) -> dict[str, float]:
    """Eq. 3: re-balanced sampling probability of each language.

    Args:
        counts: utterances per language, n_l > 0.
        alpha: exponent in [0, 1].

    Returns:
        ``{lang: q_l}``, summing to 1, in the order of ``counts``.

    Raises:
        ValueError: empty counts, a count <= 0 or alpha outside [0, 1].
    """
    if not counts:
        raise ValueError("language_probs needs at least one language")
    bad = {k: v for k, v in counts.items() if v <= 0}
    if bad:
        raise ValueError(f"language counts must be > 0, got {bad}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    total = float(sum(counts.values()))
    weights = {lang: (n / total) ** alpha for lang, n in counts.items()}
    norm = sum(weights.values())
    return {lang: w / norm for lang, w in weights.items()}


def epoch_counts(counts: Mapping[str, int], alpha: float, epoch_size: int) -> dict[str, int]:
    """Utterances of each language in one epoch of ``epoch_size`` draws (largest remainder, ties by name)."""
    if epoch_size < 1:
        raise ValueError(f"epoch_size must be >= 1, got {epoch_size}")
    q = language_probs(counts, alpha)
    exact = {lang: q[lang] * epoch_size for lang in q}
    out = {lang: int(np.floor(v)) for lang, v in exact.items()}
    left = epoch_size - sum(out.values())
    for lang in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[lang] += 1
    return out


class LanguageSampler:
    """Seeded, resumable stream of batches drawn per the re-balanced language distribution.

    Iterating yields int64 index arrays (batches of utterance rows) forever, epoch after epoch. ``batcher``
    groups one epoch's indices into batches (e.g. length buckets); without it every index is its own batch.
    ``state_dict()`` after consuming a batch, fed to ``load_state_dict()`` of a fresh sampler built the same
    way, makes it yield exactly the batches that would have come next.

    Args:
        langs: language of each utterance row, length n.
        alpha: Eq. 3 exponent.
        seed: base seed; epoch e uses a generator seeded with (seed, e).
        epoch_size: draws per epoch (default n).
        batcher: ``(indices, rng) -> list of index arrays``.
    """

    def __init__(
        self,
        langs: Sequence[str],
        alpha: float,
        seed: int = 0,
        epoch_size: int | None = None,
        batcher: Batcher | None = None,
    ):
        if len(langs) == 0:
            raise ValueError("the sampler needs at least one utterance")
        self.langs = np.asarray([str(x) for x in langs])
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.epoch_size = int(epoch_size or len(langs))
        self.batcher = batcher
        self.counts = dict(sorted(Counter(self.langs.tolist()).items()))
        self.per_epoch = epoch_counts(self.counts, self.alpha, self.epoch_size)
        self._rows = {lang: np.flatnonzero(self.langs == lang) for lang in self.counts}
        self.epoch = 0
        self.position = 0  # batches of the current epoch already consumed
        self._plan: tuple[int, list[np.ndarray]] | None = None

    # -- pure functions of (seed, epoch) ------------------------------------------------------------------
    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, stream])

    def draw_epoch(self, epoch: int) -> np.ndarray:
        """The utterance rows of one epoch (int64, shuffled), re-balanced per Eq. 3."""
        rng = self._rng(epoch, 0)
        parts = []
        for lang, rows in self._rows.items():
            m = self.per_epoch[lang]
            repeats, rest = divmod(m, len(rows))
            parts.append(np.tile(rows, repeats))  # up-sampling: every utterance as often as it fits
            parts.append(rng.choice(rows, size=rest, replace=False))  # the remainder drawn at random
        out = np.concatenate(parts).astype(np.int64)
        rng.shuffle(out)
        return out

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """One epoch's batches (cached for the current epoch)."""
        if self._plan is None or self._plan[0] != epoch:
            indices = self.draw_epoch(epoch)
            batches = (
                self.batcher(indices, self._rng(epoch, 1))
                if self.batcher is not None
                else [indices[i : i + 1] for i in range(len(indices))]
            )
            self._plan = (epoch, [np.asarray(b, dtype=np.int64) for b in batches])
        return self._plan[1]

    # -- state ---------------------------------------------------------------------------------------------
    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more batches of the current epoch as consumed."""
        self.position += n

    def next_epoch(self) -> None:
        self.epoch += 1
        self.position = 0

    def remaining(self) -> int:
        """Batches of the current epoch not consumed yet."""
        return len(self.epoch_batches(self.epoch)) - self.position

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            if self.remaining() <= 0:
                self.next_epoch()
                if self.remaining() <= 0:
                    raise ValueError("the batcher produced an empty epoch")
            batch = self.epoch_batches(self.epoch)[self.position]
            self.advance()
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "n": len(self.langs),
            "alpha": self.alpha,
            "epoch_size": self.epoch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``; refuse a state of a sampler over other data or settings."""
        mine = self.state_dict()
        diff = {
            k: (state.get(k), mine[k])
            for k in ("seed", "n", "alpha", "epoch_size")
            if state.get(k) != mine[k]
        }
        if diff:
            raise ValueError(f"sampler state does not match this data/config (saved, now): {diff}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
