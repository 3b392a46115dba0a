"""Evaluation files for the open-domain tests (after ``synthesize_open.py``).

Writes into ``--out``:

- ``en_db.txt``: every distinct English sentence of the open-domain text (all sources, train chapters
  included: they are the distractors), plus the joined English of the joined test utterances.
- ``fr_db.txt``: every distinct French sentence, the database of the EN->FR test.
- ``queries_en_fr.tsv``: the English test speech (``open_test_en.tsv``) whose sentence has an aligned French
  translation, with that French sentence as ``translation`` (the gold of EN->X retrieval).
- ``queries_unseen_asr.tsv`` / ``queries_seen_asr.tsv``: up to ``--asr-per-lang`` queries per language of each
  X->EN test, for the slow ASR cascade and the fusion.
- ``queries_dev_en_fr.tsv``: English dev clips whose sentence has an aligned French one (EN->FR on dev: with
  ``queries_dev_asr.tsv``, where the fusion's confidence gate is chosen);
- ``queries_dev_clean.tsv`` / ``queries_dev_clean_en_fr.tsv``: the same from ``open_dev_clean.tsv`` (dev pages
  by Festival and Piper), when it exists;
- ``queries_dev.tsv``: every non-English dev clip with an English reference (model selection, e.g. the weight
  of a merged model); ``queries_dev_asr.tsv``: as many non-English dev clips (held-out dev chapters, training voices), on which the
  fusion weight is chosen.

    python scripts/make_open_eval.py --data work/open_data --out work/open_eval
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def write_tsv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("\t".join(columns) + "\n")
        for r in rows:
            f.write("\t".join(r[c] for c in columns) + "\n")


def rebase(rows: list[dict[str, str]], src: Path, dst: Path) -> list[dict[str, str]]:
    """Audio paths relative to ``dst`` instead of ``src`` (both folders)."""
    rel = Path(*([".."] * len(dst.resolve().relative_to(src.resolve().parent).parts)), src.name)
    return [dict(r, audio=str(rel / r["audio"])) for r in rows]


def per_lang(rows: list[dict[str, str]], n: int) -> list[dict[str, str]]:
    """The first ``n`` rows of each language (manifest order is the seeded plan's)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        if seen[r["lang"]] < n:
            seen[r["lang"]] += 1
            out.append(r)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("work/open_data"))
    ap.add_argument("--out", type=Path, default=Path("work/open_eval"))
    ap.add_argument("--asr-per-lang", type=int, default=30)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    text = read_tsv(args.data / "open_text.tsv")
    unseen = read_tsv(args.data / "open_test_unseen.tsv")
    seen = read_tsv(args.data / "open_test_seen.tsv")
    en_speech = read_tsv(args.data / "open_test_en.tsv")
    cols = list(unseen[0].keys())

    en = {r["text"] for r in text if r["lang"] == "en"} | {r["translation"] for r in unseen + seen}
    (args.out / "en_db.txt").write_text("\n".join(sorted(en)) + "\n", encoding="utf-8")
    fr_rows = [r for r in text if r["lang"] == "fr"]
    (args.out / "fr_db.txt").write_text("\n".join(sorted({r["text"] for r in fr_rows})) + "\n", encoding="utf-8")

    fr_of = {r["translation"]: r["text"] for r in fr_rows if r["translation"]}
    en_fr = [dict(r, translation=fr_of[r["text"]]) for r in en_speech if r["text"] in fr_of]
    write_tsv(args.out / "queries_en_fr.tsv", rebase(en_fr, args.data, args.out), cols)
    for name, rows in (("unseen", unseen), ("seen", seen)):
        write_tsv(args.out / f"queries_{name}.tsv", rebase(rows, args.data, args.out), cols)
        asr = per_lang(rows, args.asr_per_lang)
        write_tsv(args.out / f"queries_{name}_asr.tsv", rebase(asr, args.data, args.out), cols)
    dev = [r for r in read_tsv(args.data / "open_dev.tsv") if r["lang"] != "en" and r["translation"]]
    write_tsv(args.out / "queries_dev.tsv", rebase(dev, args.data, args.out), cols)
    dev_en = [r for r in read_tsv(args.data / "open_dev.tsv") if r["lang"] == "en" and r["text"] in fr_of]
    dev_en_fr = [dict(r, translation=fr_of[r["text"]]) for r in dev_en]
    write_tsv(args.out / "queries_dev_en_fr.tsv", rebase(dev_en_fr, args.data, args.out), cols)
    clean_file = args.data / "open_dev_clean.tsv"
    if clean_file.is_file():  # synthesize_open.py --splits dev_clean
        clean = read_tsv(clean_file)
        clean_x = [r for r in clean if r["lang"] != "en" and r["translation"]]
        clean_en_fr = [dict(r, translation=fr_of[r["text"]]) for r in clean if r["lang"] == "en" and r["text"] in fr_of]
        write_tsv(args.out / "queries_dev_clean.tsv", rebase(clean_x, args.data, args.out), cols)
        write_tsv(args.out / "queries_dev_clean_en_fr.tsv", rebase(clean_en_fr, args.data, args.out), cols)
    write_tsv(args.out / "queries_dev_asr.tsv", rebase(per_lang(dev, args.asr_per_lang), args.data, args.out), cols)
    print(f"en_db {len(en)}  fr_db {len({r['text'] for r in fr_rows})}  en->fr {len(en_fr)}  "
          f"unseen {len(unseen)}  seen {len(seen)}")  # fmt: skip


if __name__ == "__main__":
    main()
