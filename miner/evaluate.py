"""Retrieval metrics of the paper (R@1, R@5, WER of the retrieved text), LASER's xSIM error rate and BUCC-style
threshold calibration. Pure numpy (plus ``jiwer`` for WER): no model, no index.

Tie rule of :func:`recall_at_k`, when scores are given: ties are resolved *against* the gold item. A query is
a hit at k when fewer than k non-gold candidates score at least as high as its best gold candidate. So a
gold item tied with the k-th candidate is a miss unless every candidate above the tie is gold, and a model
that scores everything alike gets R@k = 0, not a lucky hit that depends on the index's internal order.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from miner.margin import Margin, knn_mean, margin_scores, parse_margin

log = logging.getLogger(__name__)

__all__ = [
    "calibrate_threshold",
    "evaluate_retrieval",
    "format_table",
    "normalize_text",
    "recall_at_k",
    "retrieval_wer",
    "xsim_error_rate",
]

GoldSpec = Sequence[int] | np.ndarray | Sequence[Collection[int]]
SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _gold_sets(gold: GoldSpec, n: int) -> list[set[int]]:
    if isinstance(gold, np.ndarray) and gold.ndim == 1:
        sets = [{int(g)} for g in gold]
    else:
        sets = [{int(g)} if isinstance(g, int | np.integer) else {int(x) for x in g} for g in gold]
    if len(sets) != n:
        raise ValueError(f"gold has {len(sets)} entries but ranked_ids has {n} rows")
    return sets


def recall_at_k(ranked_ids: np.ndarray, gold: GoldSpec, k: int, scores: np.ndarray | None = None) -> float:
    """Share of queries with a gold item among the top k.

    Args:
        ranked_ids: int (n, m) candidate ids per query, best first; -1 marks an empty slot (faiss).
        gold: (n,) the gold id per query, or n collections of gold ids (duplicates in the database).
        k: cut-off, >= 1.
        scores: float (n, m) candidate scores. With them, ties are resolved against gold (module docstring);
            without them, the first k columns count as they stand.

    Returns:
        Recall in [0, 1] (0 for n = 0).
    """
    ranked_ids = np.asarray(ranked_ids)
    if ranked_ids.ndim != 2:
        raise ValueError(f"ranked_ids must be 2-D (n, m), got shape {ranked_ids.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = ranked_ids.shape[0]
    sets = _gold_sets(gold, n)
    if n == 0:
        return 0.0
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != ranked_ids.shape:
            raise ValueError(f"scores shape {scores.shape} differs from ranked_ids shape {ranked_ids.shape}")
    hits = 0
    for i in range(n):
        ids = ranked_ids[i]
        valid = ids >= 0
        is_gold = np.array([int(x) in sets[i] for x in ids]) & valid
        if scores is None:
            hits += bool(is_gold[:k].any())
            continue
        if not is_gold.any():
            continue
        best = scores[i][is_gold].max()
        rivals = int(np.count_nonzero(valid & ~is_gold & (scores[i] >= best)))
        hits += rivals < k
    return hits / n


def top1_hits(
    queries: np.ndarray,
    search: SearchFn,
    id_to_text: Callable[[int], str],
    gold_texts: Sequence[str],
    ties_window: int = 16,
) -> np.ndarray:
    """Per query, whether its gold text is the top hit: bool (n,), the rows whose mean per language is
    :func:`evaluate_retrieval`'s R@1 (same text normalisation and tie rule: a rival scoring as high as the best
    gold item counts against it)."""
    scores, ids = search(np.asarray(queries, dtype=np.float32), 1 + ties_window)
    scores, ids = np.asarray(scores, dtype=np.float64), np.asarray(ids)
    texts = {int(i): normalize_text(id_to_text(int(i))) for i in np.unique(ids[ids >= 0])}
    hits = np.zeros(len(ids), dtype=bool)
    for q, gold in enumerate(gold_texts):
        valid = ids[q] >= 0
        want = normalize_text(gold)
        is_gold = np.array([bool(ok) and texts[int(c)] == want for c, ok in zip(ids[q], valid, strict=True)])
        if is_gold.any():
            best = scores[q][is_gold].max()
            hits[q] = not np.any(valid & ~is_gold & (scores[q] >= best))
    return hits


_PUNCT = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower case, punctuation removed (Unicode category P*), whitespace collapsed: WER ignores formatting."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return _PUNCT.sub(" ", text).strip()


def retrieval_wer(retrieved: Sequence[str], gold: Sequence[str], normalize: bool = True) -> float:
    """Corpus-level WER of retrieved texts against gold texts (``jiwer.wer``: total edits / gold words).

    Args:
        retrieved: the top-1 text of each query (hypotheses).
        gold: the gold text of each query (references); each must hold a word after normalisation.
        normalize: apply :func:`normalize_text` to both sides first.

    Returns:
        WER >= 0 (can exceed 1 when retrieved texts are longer than the gold ones).
    """
    import jiwer

    if len(retrieved) != len(gold):
        raise ValueError(f"{len(retrieved)} retrieved texts but {len(gold)} gold texts")
    if not gold:
        raise ValueError("WER needs at least one gold text")
    hyp = [normalize_text(t) if normalize else t for t in retrieved]
    ref = [normalize_text(t) if normalize else t for t in gold]
    empty = [i for i, r in enumerate(ref) if not r.strip()]
    if empty:
        raise ValueError(
            f"gold text #{empty[0]} is empty{' after normalisation' if normalize else ''}: "
            f"{gold[empty[0]]!r}; WER needs words in every reference"
        )
    return float(jiwer.wer(ref, hyp))


def xsim_error_rate(
    x: np.ndarray,
    y: np.ndarray,
    gold: Sequence[int] | np.ndarray | None = None,
    margin: str | Margin = Margin.RATIO,
    k: int = 4,
) -> float:
    """LASER's xSIM: share of sources whose best target by margin score is not the gold one.

    score(x, y) = margin(cos(x, y), (r_x + r_y) / 2), with r_x the mean cosine of x to its k nearest targets
    and r_y that of y to its k nearest sources (:mod:`miner.margin`); ``absolute`` is plain nearest neighbour.

    Args:
        x: float (n, d) source embeddings; y: float (m, d) targets (both L2-normalised here).
        gold: (n,) gold target row per source (default: row i <-> row i, needs n == m).
        margin: ``ratio`` (LASER's default), ``distance`` or ``absolute``.
        k: neighbourhood size.

    Returns:
        Error rate in [0, 1] (LASER prints it as a percentage).
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be 2-D with the same dim, got {x.shape} and {y.shape}")
    if gold is None:
        if len(x) != len(y):
            raise ValueError(f"without gold, x and y must have the same length (got {len(x)} and {len(y)})")
        gold = np.arange(len(x))
    gold = np.asarray(gold, dtype=np.int64)
    if gold.shape != (len(x),):
        raise ValueError(f"gold must hold one target row per source ({len(x)}), got shape {gold.shape}")
    if len(x) == 0:
        return 0.0
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sims = x @ y.T  # (n, m)
    kx, ky = min(k, sims.shape[1]), min(k, sims.shape[0])
    r_x = knn_mean(
        np.partition(sims, -kx, axis=1)[:, -kx:]
    )  # the k best, in any order: only their mean counts
    r_y = knn_mean(np.partition(sims.T, -ky, axis=1)[:, -ky:])
    scores = margin_scores(sims, r_x[:, None], r_y[None, :], parse_margin(margin))
    best = np.argmax(scores, axis=1)
    return float(np.mean(best != gold))


def calibrate_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, n_gold: int | None = None
) -> tuple[float, float, float, float]:
    """Pick the score threshold with the best F1, BUCC style.

    Candidates are sorted by score (descending); every cut between two *distinct* adjacent scores is tried, and
    the threshold is the midpoint of the two scores at the best cut, so that ``score > threshold`` keeps
    exactly the candidates above the cut. Keeping all candidates puts the threshold just below the lowest
    score. Among equal F1, the higher threshold wins.

    Args:
        scores: (n,) candidate scores (e.g. margin scores of mined pairs).
        labels: (n,) True for a correct candidate.
        n_gold: number of gold pairs for recall (default: ``sum(labels)``; BUCC counts gold pairs that no
            candidate found too).

    Returns:
        (threshold, f1, precision, recall).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D of the same length, got {s.shape} and {y.shape}")
    if len(s) == 0:
        raise ValueError("calibrate_threshold needs at least one candidate")
    if not np.isfinite(s).all():
        raise ValueError("scores hold NaN or infinite values")
    gold = int(y.sum()) if n_gold is None else int(n_gold)
    if gold <= 0:
        raise ValueError("no gold pair: calibration needs at least one positive label (or n_gold > 0)")
    if gold < int(y.sum()):
        raise ValueError(f"n_gold={gold} is below the number of positive labels ({int(y.sum())})")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    kept = np.arange(1, len(s) + 1)
    # A cut after position i is valid only where the next score differs (ties stay on one side).
    valid = np.r_[s[:-1] > s[1:], True]
    precision = tp / kept
    recall = tp / gold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(valid, f1, -1.0)
    i = int(np.argmax(f1))  # first maximum = the highest threshold among equal F1
    threshold = (s[i] + s[i + 1]) / 2.0 if i + 1 < len(s) else float(np.nextafter(s[i], -np.inf))
    return float(threshold), float(f1[i]), float(precision[i]), float(recall[i])


def evaluate_retrieval(
    queries: np.ndarray,
    search: SearchFn,
    id_to_text: Callable[[int], str],
    gold_texts: Sequence[str],
    langs: Sequence[str],
    k: int = 5,
    ties_window: int = 16,
    normalize: bool = True,
    durations: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Speech-to-text (or text-to-text) retrieval scores per language, as in the paper's tables.

    A retrieved item is gold when its text equals the query's gold text (after :func:`normalize_text` when
    ``normalize``), so duplicate sentences in the database all count as gold.

    Args:
        queries: float32 (n, d) query embeddings.
        search: ``search(queries, k) -> (scores (n, k) float, ids (n, k) int64)``, best first.
        id_to_text: text of a database id.
        gold_texts: (n,) the text each query should retrieve.
        langs: (n,) language of each query.
        k: the larger cut-off (R@1 and R@k are reported).
        ties_window: extra candidates fetched beyond k so that ties at the cut-off are seen.
        normalize: compare texts after normalisation (also for WER).
        durations: (n,) seconds of each query clip; when given, the result also has ``by_duration``: the same
            scores per bucket of :data:`DURATION_BUCKETS` (all languages pooled; empty buckets left out).

    Returns:
        ``{"by_lang": {lang: {"n", "r1", "r<k>", "wer"}}, "avg": {...}, "k": k}``; recalls are fractions in
        [0, 1], WER is that of the top-1 text; ``avg`` is the unweighted mean over languages (``n`` summed).
    """
    queries = np.asarray(queries, dtype=np.float32)
    n = len(queries)
    if len(gold_texts) != n or len(langs) != n:
        raise ValueError(f"{n} queries but {len(gold_texts)} gold texts and {len(langs)} languages")
    if n == 0:
        raise ValueError("no queries to evaluate")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores, ids = search(queries, k + ties_window)
    scores, ids = np.asarray(scores), np.asarray(ids)
    norm = normalize_text if normalize else (lambda t: t.strip())
    texts: dict[int, str] = {}
    for i in np.unique(ids[ids >= 0]):
        texts[int(i)] = id_to_text(int(i))
    gold_norm = [norm(t) for t in gold_texts]
    gold_sets = [{int(c) for c in ids[q] if c >= 0 and norm(texts[int(c)]) == gold_norm[q]} for q in range(n)]
    top1 = [texts[int(ids[q, 0])] if ids[q, 0] >= 0 else "" for q in range(n)]
    rk = f"r{k}"
    by_lang: dict[str, dict[str, float]] = {}
    langs = [str(x) for x in langs]
    for lang in sorted(set(langs)):
        rows = [q for q in range(n) if langs[q] == lang]
        sub_ids, sub_scores = ids[rows], scores[rows]
        sub_gold = [gold_sets[q] for q in rows]
        entry = {"n": len(rows), "r1": recall_at_k(sub_ids, sub_gold, 1, sub_scores)}
        if k > 1:
            entry[rk] = recall_at_k(sub_ids, sub_gold, k, sub_scores)
        entry["wer"] = retrieval_wer([top1[q] for q in rows], [gold_texts[q] for q in rows], normalize)
        by_lang[lang] = entry
    metrics = [m for m in ("r1", rk, "wer") if m in next(iter(by_lang.values()))]
    avg: dict[str, float] = {"n": sum(e["n"] for e in by_lang.values())}
    for m in metrics:
        avg[m] = float(np.mean([e[m] for e in by_lang.values()]))
    out: dict[str, Any] = {"by_lang": by_lang, "avg": avg, "k": k}
    if durations is not None:
        if len(durations) != n:
            raise ValueError(f"{n} queries but {len(durations)} durations")
        out["by_duration"] = {}
        for lo, hi in DURATION_BUCKETS:
            rows = [q for q in range(n) if lo <= durations[q] < hi]
            if rows:
                sub_gold = [gold_sets[q] for q in rows]
                entry = {"n": len(rows), "r1": recall_at_k(ids[rows], sub_gold, 1, scores[rows])}
                if k > 1:
                    entry[rk] = recall_at_k(ids[rows], sub_gold, k, scores[rows])
                out["by_duration"][duration_label(lo, hi)] = entry
    return out


# Query-length buckets of the by-duration report, in seconds: [lo, hi).
DURATION_BUCKETS: tuple[tuple[float, float], ...] = ((0, 5), (5, 10), (10, 20), (20, float("inf")))


def duration_label(lo: float, hi: float) -> str:
    """``"5-10s"`` for a bucket, ``"20s+"`` for the open-ended last one."""
    return f"{lo:g}s+" if hi == float("inf") else f"{lo:g}-{hi:g}s"


_LABELS = {"r1": "R@1", "wer": "WER"}


def format_table(
    results: Mapping[str, Any],
    topline: Mapping[str, Any] | None = None,
    baseline: Mapping[str, Any] | None = None,
    name: str = "SAMU",
    digits: int = 1,
) -> str:
    """A markdown table shaped like the paper's: rows are system x metric, columns languages then Avg.

    Recalls and WER are shown in percent. ``topline`` (the text encoder on gold transcripts) and ``baseline``
    (e.g. ASR then text retrieval) rows come first when given.

    Args:
        results, topline, baseline: outputs of :func:`evaluate_retrieval`.
        name: label of the ``results`` rows.
        digits: decimals.
    """
    systems = [
        (label, r)
        for label, r in (("Topline (text)", topline), ("Baseline (ASR)", baseline), (name, results))
        if r is not None
    ]
    langs = sorted({lang for _, r in systems for lang in r["by_lang"]})
    metrics = [m for m in results["avg"] if m != "n"]
    header = ["System", "Metric", *langs, "Avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in systems:
        for j, m in enumerate(metrics):
            cells = [label if j == 0 else "", _LABELS.get(m, m.replace("r", "R@", 1))]
            for lang in langs:
                v = r["by_lang"].get(lang, {}).get(m)
                cells.append("-" if v is None else f"{100 * v:.{digits}f}")
            v = r["avg"].get(m)
            cells.append("-" if v is None else f"{100 * v:.{digits}f}")
            lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(
        f"{lang}: {results['by_lang'][lang]['n']}" for lang in langs if lang in results["by_lang"]
    )
    lines.append("")
    lines.append(f"Queries per language: {counts}. R@k and WER in %.")
    return "\n".join(lines)
