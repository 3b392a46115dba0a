"""Package the trained demo model and demo data into ``miner/demo_assets`` (what `miner demo` ships).

Only ``model/``, ``clips/``, ``clips.tsv``, ``en_corpus.txt`` and ``README.md`` are replaced; other model folders
in ``--out`` are kept.

- ``model/``: the SAMU head only (config.json + head.safetensors, backbone ``offline:whisper-base``), with the
  mining threshold calibrated here (BUCC style, best F1) on dev clips mined against the demo corpus;
- ``clips/`` + ``clips.tsv``: a few held-out (test split) FLAC clips per language, each of another meaning; with
  ``--open-eval``, also open-domain clips of the held-out Handbook pages spoken by voices never used in training
  (Pico, Festival's Russian voice), short and long (``clips.tsv`` records synth, voice and duration);
- ``en_corpus.txt``: English sentences holding the clips' translations among held-out distractors (catalog
  strings, and open-domain sentences with ``--open-eval``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import shutil
from pathlib import Path

from miner.audio import load_audio
from miner.encoders.samu import SpeechEncoder
from miner.encoders.text import load_text_encoder_for
from miner.evaluate import calibrate_threshold
from miner.mine import mine_embeddings

log = logging.getLogger("package_demo_assets")


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def pick_open_clips(rows: list[dict[str, str]], per_lang: int, used: set[str]) -> list[dict[str, str]]:
    """Per language, alternately a short (<= 10 s) and a long (> 10 s) clip, each of another English sentence."""
    out: list[dict[str, str]] = []
    for lang in sorted({r["lang"] for r in rows}):
        mine = [r for r in rows if r["lang"] == lang]
        for i in range(per_lang):
            want_long = i % 2 == 1
            pick = next((r for r in mine if (float(r["duration"]) > 10) == want_long
                         and r["translation"] not in used), None)  # fmt: skip
            if pick is not None:
                out.append(pick)
                used.add(pick["translation"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=Path("runs/demo/final"))
    ap.add_argument("--data", type=Path, default=Path("work/demo_run"))
    ap.add_argument("--out", type=Path, default=Path("miner/demo_assets"))
    ap.add_argument("--clips-per-lang", type=int, default=4)
    ap.add_argument("--langs", default="fr,de,es,it,pt,nl,pl,ru,sv")
    ap.add_argument("--dev-clips", type=int, default=400)
    ap.add_argument("--corpus-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--open-eval", type=Path, default=None, help="make_open_eval.py's folder: add open-domain clips")
    ap.add_argument("--open-clips-per-lang", type=int, default=2, help="one short (<= 10 s) and one long clip each")
    ap.add_argument("--open-distractors", type=int, default=2000)
    ap.add_argument("--open-dev-clips", type=int, default=200)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rng = random.Random(args.seed)

    # One clip per English sentence: max mode pairs each sentence with one clip, so clips sharing a meaning
    # (the test split speaks each meaning in up to 9 languages) would cap recall below 1 by construction.
    queries = read_tsv(args.data / "queries_x_en.tsv")
    by_lang: dict[str, list[dict[str, str]]] = {}
    for r in queries:
        by_lang.setdefault(r["lang"], []).append(r)
    demo: list[dict[str, str]] = []
    used: set[str] = set()
    for lang in args.langs.split(","):
        fresh = [r for r in by_lang.get(lang, []) if r["translation"] not in used][: args.clips_per_lang]
        demo += fresh
        used.update(r["translation"] for r in fresh)
    dev = read_tsv(args.data / "dev.tsv")
    rng.shuffle(dev)
    first_per_sentence: dict[str, dict[str, str]] = {}
    for r in dev:
        first_per_sentence.setdefault(r["translation"], r)
    dev = list(first_per_sentence.values())[: args.dev_clips]
    open_pool: list[str] = []
    if args.open_eval is not None:
        picked = pick_open_clips(read_tsv(args.open_eval / "queries_unseen.tsv"), args.open_clips_per_lang, used)
        demo += [dict(r, base=str(args.open_eval)) for r in picked]  # "base": the folder its audio is relative to
        open_dev = read_tsv(args.open_eval / "queries_dev_asr.tsv")[: args.open_dev_clips]
        dev += [dict(r, base=str(args.open_eval)) for r in open_dev]
        open_pool = (args.open_eval / "en_db.txt").read_text(encoding="utf-8").splitlines()
        rng.shuffle(open_pool)
        open_pool = open_pool[: args.open_distractors]

    # Corpus: the demo and dev clips' translations, then held-out distractors from the evaluation database.
    must = list(dict.fromkeys([r["translation"] for r in demo] + [r["translation"] for r in dev]))
    pool = [
        t
        for t in (args.data / "en_db.txt").read_text(encoding="utf-8").splitlines()
        if t and t not in set(must)
    ]
    rng.shuffle(pool)
    corpus = sorted(set(must + pool[: max(0, args.corpus_size - len(must))] + open_pool))

    model = SpeechEncoder.from_pretrained(args.model)
    text = load_text_encoder_for(model)
    y = text.encode(corpus, progress=True)
    x = model.encode([load_audio(Path(r.get("base", args.data)) / r["audio"]) for r in dev], batch_size=8, progress=True)
    pairs = mine_embeddings(x, y, k=4, margin="ratio", mode="max", threshold=-1e9)
    labels = [corpus[t] == dev[s]["translation"] for _, s, t in pairs]
    threshold, f1, precision, recall = calibrate_threshold(
        [sc for sc, _, _ in pairs], labels, n_gold=len(dev)
    )
    log.info(
        "dev calibration on %d clips: threshold %.4f, F1 %.3f (P %.3f, R %.3f)",
        len(dev),
        threshold,
        f1,
        precision,
        recall,
    )

    out = args.out
    # Replace only what this script writes: other model folders beside it (model_open, model_catalog) stay.
    for name in ("model", "clips"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "clips").mkdir(parents=True)
    model.config.extra.update(
        {
            "mine_threshold": round(float(threshold), 4),
            "mine_threshold_dev": {
                "clips": len(dev),
                "f1": round(f1, 4),
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "corpus": len(corpus),
            },
        }
    )
    model.config.backbone_source = "offline:whisper-base"
    model.save_pretrained(out / "model", include_backbone=False)
    for extra in ("MODEL_CARD.md",):
        if (args.model / extra).is_file():
            shutil.copy(args.model / extra, out / "model" / extra)
    rows = []
    for r in demo:
        name = Path(r["audio"]).name
        shutil.copy(Path(r.get("base", args.data)) / r["audio"], out / "clips" / name)
        rows.append({
            "audio": f"clips/{name}", "lang": r["lang"], "text": r["text"], "translation": r["translation"],
            "synth": r.get("synth", "espeak"), "voice": r.get("voice", "").split(";")[0],
            "duration": f"{float(r['duration']):.1f}",
        })  # fmt: skip
    columns = ["audio", "lang", "text", "translation", "synth", "voice", "duration"]
    with (out / "clips.tsv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, columns, delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    (out / "en_corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    (out / "README.md").write_text(
        "# Demo assets\n\nWritten by `scripts/package_demo_assets.py`; see `docs/models.md` and the model card.\n"
        f"- {len(rows)} held-out clips: {args.clips_per_lang} espeak-ng catalog strings per language"
        + (f", {len(rows) - args.clips_per_lang * len(args.langs.split(','))} open-domain sentences by unseen voices"
           if args.open_eval else "") + "; `clips.tsv` their truth, synth, voice and duration\n"
        f"- `en_corpus.txt`: {len(corpus)} English sentences\n"
        f"- `model/`: SAMU head on Whisper-base, threshold {threshold:.4f} (dev F1 {f1:.3f})\n",
        encoding="utf-8",
    )
    print(
        json.dumps(
            {
                "threshold": threshold,
                "f1": f1,
                "precision": precision,
                "recall": recall,
                "clips": len(rows),
                "corpus": len(corpus),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
