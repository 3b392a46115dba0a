"""Choose fusion gates of several shapes on dev sets and score them on test sets (from gate_features.py dumps).

A gate splits clips into buckets by what the encoder knows at encode time (Whisper's confidence, the clip's
length, how far the SAMU and cascade vectors agree) and gives each bucket its own weight. The dev score is the
one ``choose_fusion_gate`` uses (mean over sets of each set's mean over languages); it is a sum over clips, so
each bucket's best weight is chosen on its own and every split can be tried exhaustively.

    python scripts/experiments/gate_search.py --dir runs/gate_features --dev dev_open,dev_catalog \
        --test test_unseen,test_catalog --json runs/gate_features/search.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

CONF_T = (-0.1, -0.15, -0.2, -0.3, -0.4, -0.5, -0.6, -0.8, -1.0, -1.2)
SECONDS_T = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)
AGREE_T = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def load(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Concatenate sets; ``coef`` is each clip's share of the score (sets and languages count alike)."""
    parts = [dict(np.load(folder / f"{n}.npz")) for n in names]
    for p in parts:
        langs = p["langs"]
        per_lang = {lang: np.sum(langs == lang) for lang in set(langs.tolist())}
        p["coef"] = np.asarray([1.0 / (len(names) * len(per_lang) * per_lang[x]) for x in langs])
    keys = ("confidence", "seconds", "agreement", "coef")
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    out["hits"] = np.concatenate([p["hits"] for p in parts], axis=1)
    out["weights"] = parts[0]["weights"]
    return out


def best_w(score: np.ndarray, weights: np.ndarray) -> int:
    """Index of the best weight; ties: closest to 0.5, then the larger (as ``best_weight``)."""
    return max(range(len(weights)), key=lambda i: (round(score[i], 12), -abs(weights[i] - 0.5), weights[i]))


def fit(data: dict[str, np.ndarray], bucket: np.ndarray, k: int) -> tuple[float, list[float]]:
    """Best weight per bucket and the dev score of the whole rule."""
    w = data["weights"]
    total, chosen = 0.0, []
    for b in range(k):
        sel = bucket == b
        score = (data["hits"][:, sel] * data["coef"][sel]).sum(axis=1)
        i = best_w(score, w)
        total += score[i]
        chosen.append(float(w[i]))
    return total, chosen


def apply(data: dict[str, np.ndarray], bucket: np.ndarray, weights: list[float]) -> float:
    idx = np.asarray([int(np.argmin(np.abs(data["weights"] - x))) for x in weights])[bucket]
    return float((data["hits"][idx, np.arange(len(bucket))] * data["coef"]).sum())


Rule = tuple[str, Callable[[dict[str, np.ndarray]], np.ndarray], int]


def rules() -> list[Rule]:
    """Every split tried: (description, clips -> bucket index, number of buckets)."""

    def conf(d: dict[str, np.ndarray]) -> np.ndarray:
        return np.nan_to_num(d["confidence"], nan=-np.inf)

    out: list[Rule] = [("single weight", lambda d: np.zeros(len(d["coef"]), int), 1)]
    for t in CONF_T:
        out.append((f"conf>={t}", lambda d, t=t: (conf(d) >= t).astype(int), 2))
    for t1, t2 in itertools.combinations(sorted(CONF_T), 2):
        out.append(
            (
                f"conf in [<{t1}, {t1}..{t2}, >={t2}]",
                lambda d, a=t1, b=t2: (conf(d) >= a).astype(int) + (conf(d) >= b),
                3,
            )
        )
    for t, s in itertools.product(CONF_T, SECONDS_T):
        out.append(
            (
                f"conf>={t} & sec>={s}",
                lambda d, t=t, s=s: ((conf(d) >= t) & (d["seconds"] >= s)).astype(int),
                2,
            )
        )
    for a in AGREE_T:
        out.append((f"agree>={a}", lambda d, a=a: (d["agreement"] >= a).astype(int), 2))
    for t, a in itertools.product(CONF_T, AGREE_T):
        out.append(
            (
                f"conf>={t} & agree>={a}",
                lambda d, t=t, a=a: ((conf(d) >= t) & (d["agreement"] >= a)).astype(int),
                2,
            )
        )
    for t1, t2, a in itertools.product(CONF_T, CONF_T, AGREE_T):
        if t2 < t1:
            continue
        out.append(
            (
                f"conf3 [<{t1}, >={t1}, >={t2} & agree>={a}]",
                lambda d, t1=t1, t2=t2, a=a: (
                    (conf(d) >= t1).astype(int) + ((conf(d) >= t2) & (d["agreement"] >= a))
                ),
                3,
            )
        )
    for s in SECONDS_T:
        out.append((f"sec>={s}", lambda d, s=s: (d["seconds"] >= s).astype(int), 2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--dev", required=True, help="comma-separated set names chosen on")
    ap.add_argument("--test", required=True, help="comma-separated set names scored (each alone)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", type=Path, help="write the rows shown (best rules, best of each family) here")
    args = ap.parse_args()
    dev = load(args.dir, args.dev.split(","))
    tests = {n: load(args.dir, [n]) for n in args.test.split(",")}
    rows = []
    for name, split, k in rules():
        score, weights = fit(dev, split(dev), k)
        test = {n: apply(d, split(d), weights) for n, d in tests.items()}
        sides = {
            n: (float(d["hits"][-1] @ d["coef"]), float(d["hits"][0] @ d["coef"])) for n, d in tests.items()
        }
        rows.append(
            {"rule": name, "buckets": k, "weights": weights, "dev": score, "test": test, "samu_asr": sides}
        )
    rows.sort(key=lambda r: (-round(r["dev"], 9), r["buckets"]))
    best_per_family: dict[str, dict] = {}
    for r in rows:
        family = r["rule"].split("=")[0].split(" in ")[0]
        best_per_family.setdefault(family, r)
    names = list(tests)
    shown = rows[: args.top] + [r for r in best_per_family.values() if r not in rows[: args.top]]
    print("rule | weights | dev | " + " | ".join(names))
    for r in shown:
        cells = " | ".join(f"{100 * r['test'][n]:.1f}" for n in names)
        print(f"{r['rule']} | {r['weights']} | {100 * r['dev']:.1f} | {cells}")
    print(
        "SAMU / ASR: "
        + ", ".join(f"{n} {100 * s:.1f}/{100 * a:.1f}" for n, (s, a) in rows[0]["samu_asr"].items())
    )
    if args.json:
        record = {"dev": args.dev.split(","), "rules_tried": len(rows), "shown": shown}
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
