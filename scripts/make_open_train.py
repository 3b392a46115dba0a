"""The stage-7 training manifest: open-domain clips plus a replay share of the catalog clips of stages 1-6.

Stage 7 warm-starts from the catalog-string model; training it on open-domain speech alone would let it forget
the short UI strings it was good at, so a fixed share of the catalog clips (``train.tsv`` of
``make_demo_manifests.py``: the clips whose meanings are in neither evaluation database) is mixed back in.

    python scripts/make_open_train.py --open work/open_data/open_train.tsv --replay work/demo_run/train.tsv \
        --replay-per-lang 800 --out work/open_run/train.tsv
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict
from pathlib import Path

COLUMNS = ("id", "audio", "lang", "text", "translation", "meaning_id", "duration", "source", "synth", "voice",
           "augment")  # fmt: skip


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def rebased(rows: list[dict[str, str]], src: Path, dst_dir: Path) -> list[dict[str, str]]:
    """Audio paths made relative to ``dst_dir`` (they are relative to ``src``'s folder)."""
    out = []
    for r in rows:
        audio = (src.parent / r["audio"]).resolve()
        out.append(dict(r, audio=os.path.relpath(audio, dst_dir.resolve())))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open", type=Path, required=True, help="open_train.tsv of synthesize_open.py")
    ap.add_argument("--replay", type=Path, required=True, help="catalog train manifest (make_demo_manifests.py)")
    ap.add_argument("--replay-per-lang", type=int, default=800)
    ap.add_argument("--open-per-lang", type=int, default=0, help="keep the first N open-domain clips per language "
                    "(0: all); the frame cache costs ~25-50 audio-s per s on 2 CPU cores")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    opened = read_tsv(args.open)
    if args.open_per_lang > 0:
        kept: dict[str, int] = defaultdict(int)
        capped = []
        for r in opened:
            if kept[r["lang"]] < args.open_per_lang:
                kept[r["lang"]] += 1
                capped.append(r)
        opened = capped
    rows = rebased(opened, args.open, args.out.parent)
    taken: dict[str, int] = defaultdict(int)
    replay = []
    for r in sorted(read_tsv(args.replay), key=lambda r: r["id"]):
        if taken[r["lang"]] < args.replay_per_lang:
            taken[r["lang"]] += 1
            # newer catalog manifests record each clip's voice; older ones only imply espeak-ng
            replay.append(
                dict(r, source="catalogs", synth=r.get("synth") or "espeak", voice=r.get("voice") or "",
                     augment=r.get("augment") or "")
            )  # fmt: skip
    rows += rebased(replay, args.replay, args.out.parent)
    tmp = args.out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            f.write("\t".join(r.get(c, "") for c in COLUMNS) + "\n")
    tmp.replace(args.out)
    print(f"{args.out}: {len(rows)} clips ({len(rows) - len(replay)} open-domain, {len(replay)} replay)")


if __name__ == "__main__":
    main()
