"""Cut the synthesized data into the manifests and corpora that train and evaluate the demo model.

Outputs in ``--out`` (default ``work/demo_run``):
- ``train.tsv``: non-English train clips (the paper's T1 setup: speech with its own transcript);
- ``dev.tsv``: up to ``--dev-per-lang`` dev clips per language, for the dev loss;
- ``queries_x_en.tsv``: test clips of each non-English language (held-out meanings), ``translation`` = English;
- ``queries_en_x.tsv``: English test clips, ``translation`` = the French sentence (EN->X direction);
- ``en_speech_db.tsv``: English test and dev clips, the search side of speech-to-speech X->EN retrieval;
- ``en_dev_db.txt``: ``en_db.txt`` plus the dev clips' English sentences (the dev queries' database);
- ``en_db.txt``: English sentences of every test meaning plus held-out distractors (dev meanings, then train
  meanings unused by training) up to ``--db-size``; ``fr_db.txt`` likewise in French.
All paths in the manifests are relative to ``--out`` so the folder can move.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from collections import defaultdict
from pathlib import Path


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def write_tsv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    """Plain tab-separated lines, as every reader here expects (``csv`` with ``QUOTE_NONE``, no escape
    character): a field's tabs and line breaks become spaces, and nothing else is changed. (``csv.writer``
    with an escape character wrote every ``"`` as ``\\"``, which no reader undid.)"""
    tmp = path.with_name(path.name + ".tmp")

    def clean(value: object) -> str:
        return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")

    with tmp.open("w", encoding="utf-8", newline="") as f:
        f.write("\t".join(columns) + "\n")
        for row in rows:
            f.write("\t".join(clean(row.get(c, "")) for c in columns) + "\n")
    os.replace(tmp, path)


def rebase(rows: list[dict[str, str]], src: Path, dst: Path) -> list[dict[str, str]]:
    """Make audio paths relative to ``dst`` (they are relative to ``src`` in the synthesized manifests)."""
    out = []
    for r in rows:
        r = dict(r)
        r["audio"] = os.path.relpath(src / r["audio"], dst)
        out.append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("work/demo_data"))
    ap.add_argument("--out", type=Path, default=Path("work/demo_run"))
    ap.add_argument("--langs", default="fr,de,es,it,pt,nl,pl,ru,sv")
    ap.add_argument("--train-per-lang", type=int, default=4000)
    ap.add_argument("--dev-per-lang", type=int, default=200)
    ap.add_argument("--test-per-lang", type=int, default=300)
    ap.add_argument("--db-size", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--more-train-per-lang",
        type=int,
        default=0,
        help="also write train_more.tsv: train.tsv plus up to N more clips per language whose meanings are in "
        "neither database (the evaluation stays the same)",
    )
    ap.add_argument(
        "--more-out",
        default="train_more.tsv",
        help="file name (in --out) of the grown train manifest, so each warm-started stage keeps its own",
    )
    ap.add_argument(
        "--eval-only",
        action="store_true",
        help="write only the evaluation files (no train clips needed: synthesize with --splits test,dev); the "
        "meanings train.tsv would hold, which the databases leave out, are read from parallel.tsv's plan",
    )
    args = ap.parse_args()
    if args.eval_only and args.more_train_per_lang:
        ap.error("--eval-only writes no train manifest: drop --more-train-per-lang")
    langs = args.langs.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    cols = ["id", "audio", "lang", "text", "translation", "meaning_id", "duration"]
    rng = random.Random(args.seed)

    def capped(rows: list[dict[str, str]], per_lang: int) -> list[dict[str, str]]:
        by_lang: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in sorted(rows, key=lambda r: r["meaning_id"]):
            if r["lang"] in langs and len(by_lang[r["lang"]]) < per_lang:
                by_lang[r["lang"]].append(r)
        return [r for lang in langs for r in by_lang[lang]]

    if args.eval_only:
        # synthesize_speech.py speaks each language's train meanings in meaning-id order, so the first
        # --train-per-lang of them are the ones train.tsv would hold.
        planned = [
            {"meaning_id": r["meaning_id"], "lang": lang}
            for r in read_tsv(args.data / "parallel.tsv")
            if r["split"] == "train"
            for lang in langs
            if r.get(lang)
        ]
        train = capped(planned, args.train_per_lang)
    else:
        train = capped(read_tsv(args.data / "train.tsv"), args.train_per_lang)
    dev = capped(read_tsv(args.data / "dev.tsv"), args.dev_per_lang)
    # how each clip was made (synthesize_speech.py writes these), kept when the inputs have them
    cols += [c for c in ("synth", "voice", "augment") if dev and c in dev[0]]
    test_all = read_tsv(args.data / "test.tsv")
    test = capped(test_all, args.test_per_lang)
    if not args.eval_only:
        write_tsv(args.out / "train.tsv", rebase(train, args.data, args.out), cols)
    write_tsv(args.out / "dev.tsv", rebase(dev, args.data, args.out), cols)
    write_tsv(args.out / "queries_x_en.tsv", rebase(test, args.data, args.out), cols)

    parallel = read_tsv(args.data / "parallel.tsv")
    by_meaning = {r["meaning_id"]: r for r in parallel}
    en_test = [r for r in test_all if r["lang"] == "en" and by_meaning[r["meaning_id"]].get("fr")]
    en_test = sorted(en_test, key=lambda r: r["meaning_id"])[: args.test_per_lang]
    en_queries = [dict(r, translation=by_meaning[r["meaning_id"]]["fr"]) for r in en_test]
    write_tsv(args.out / "queries_en_x.tsv", rebase(en_queries, args.data, args.out), cols)

    en_speech = [r for r in test_all + read_tsv(args.data / "dev.tsv") if r["lang"] == "en"]
    write_tsv(args.out / "en_speech_db.tsv", rebase(en_speech, args.data, args.out), cols)

    # Databases: every test meaning, then held-out distractors (never spoken in training).
    used = {r["meaning_id"] for r in train}
    test_ids = sorted({r["meaning_id"] for r in test_all})
    others = [r["meaning_id"] for r in parallel if r["split"] == "dev"]
    others += [r["meaning_id"] for r in parallel if r["split"] == "train" and r["meaning_id"] not in used]
    rng.shuffle(others)
    in_db: set[str] = set()
    for lang in ("en", "fr"):
        ids = [m for m in test_ids if by_meaning[m].get(lang)]
        ids += [m for m in others if by_meaning[m].get(lang)][: max(0, args.db_size - len(ids))]
        in_db.update(ids)
        texts = sorted({by_meaning[m][lang] for m in ids})
        (args.out / f"{lang}_db.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    # The dev queries' database: en_db.txt plus the dev clips' English (model selection never uses the tests).
    en_db = (args.out / "en_db.txt").read_text(encoding="utf-8").splitlines()
    dev_en = sorted({r["translation"] for r in dev} - set(en_db))
    (args.out / "en_dev_db.txt").write_text("\n".join(en_db + dev_en) + "\n", encoding="utf-8")
    print(f"train {len(train)}  dev {len(dev)}  x->en queries {len(test)}  en->x queries {len(en_queries)}")
    if args.more_train_per_lang > 0:
        taken = {(r["meaning_id"], r["lang"]) for r in train}
        spare = [
            r
            for r in read_tsv(args.data / "train.tsv")
            if (r["meaning_id"], r["lang"]) not in taken and r["meaning_id"] not in in_db
        ]
        more = capped(spare, args.more_train_per_lang)
        write_tsv(args.out / args.more_out, rebase(train + more, args.data, args.out), cols)
        counts = {lang: sum(r["lang"] == lang for r in more) for lang in langs}
        print(f"{args.more_out}: {len(train) + len(more)} clips (+{len(more)}: {counts})")


if __name__ == "__main__":
    main()
