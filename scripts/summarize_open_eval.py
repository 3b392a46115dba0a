"""Side-by-side tables of one or more models' open-domain results (``scripts/eval_open_model.sh`` folders).

For every test file found in each folder: R@1 / R@5 of SAMU, the text topline, and, where the subset was
run with the fused model, SAMU / ASR cascade / fused on the same queries; then R@1 by language and by query
duration. Markdown on stdout, for docs/benchmarks.md::

    python scripts/summarize_open_eval.py stage6=runs/stage6/eval_open stage7=runs/demo_open/eval_open
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TESTS = (
    ("unseen_samu", "X->EN, unseen voices (Pico de/es/fr/it, Festival ru)"),
    ("seen_samu", "X->EN, espeak-ng (training voice family), 9 languages"),
    ("en_fr_samu", "EN->FR, English by Pico"),
)
SUBSETS = (
    ("unseen_subset_fused", "X->EN unseen voices, 15 per language"),
    ("seen_subset_fused", "X->EN espeak-ng, 15 per language"),
)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str]) -> None:
    runs = [(a.split("=", 1)[0], Path(a.split("=", 1)[1])) for a in argv]
    print("| test | model | queries | SAMU R@1 / R@5 | text topline R@1 |")
    print("|---|---|---|---|---|")
    for name, label in TESTS:
        for model, folder in runs:
            res = load(folder, name)
            if res:
                s, t = res["samu"]["avg"], (res.get("topline") or {}).get("avg", {})
                print(f"| {label} | {model} | {s['n']} | {pct(s['r1'])} / {pct(s.get('r5'))} | {pct(t.get('r1'))} |")
    print("\n| subset | model | w | SAMU R@1 | ASR cascade R@1 | fused R@1 | text topline R@1 |")
    print("|---|---|---|---|---|---|---|")
    for name, label in SUBSETS:
        for model, folder in runs:
            res = load(folder, name)
            if not res:
                continue
            parts = res["samu"].get("parts", {})
            top = (res.get("topline") or {}).get("avg", {}).get("r1")
            w = res["model_id"].split(",w=")[1].split(":")[0] if ",w=" in res["model_id"] else "?"
            print(f"| {label} | {model} | {w} | {pct(parts.get('samu', {}).get('avg', {}).get('r1'))} | "
                  f"{pct(parts.get('asr', {}).get('avg', {}).get('r1'))} | {pct(res['samu']['avg']['r1'])} | {pct(top)} |")  # fmt: skip
    for name, label in TESTS[:2]:
        print(f"\n{label}: R@1 by language and by duration")
        langs = sorted({lang for _, f in runs if (r := load(f, name)) for lang in r["samu"]["by_lang"]})
        buckets = [b for _, f in runs if (r := load(f, name)) for b in r["samu"].get("by_duration", {})]
        buckets = list(dict.fromkeys(buckets))
        print("\n| model | " + " | ".join(langs) + " | " + " | ".join(buckets) + " |")
        print("|---|" + "---|" * (len(langs) + len(buckets)))
        for model, folder in runs:
            res = load(folder, name)
            if res:
                by_l, by_d = res["samu"]["by_lang"], res["samu"].get("by_duration", {})
                cells = [pct(by_l.get(x, {}).get("r1")) for x in langs]
                cells += [f"{pct(by_d.get(b, {}).get('r1'))} ({by_d.get(b, {}).get('n', 0)})" for b in buckets]
                print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
