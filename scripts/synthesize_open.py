"""Speak the open-domain sentences (``gather_open_text.py``) with many voices, at many lengths, augmented.

Plans utterances from ``open_text.tsv``, renders each with one synthesizer and voice (``miner.voices``),
applies the seeded augmentation chain to training clips, and writes 16 kHz mono FLAC clips and manifests::

    <out>/audio/<split>/<lang>/<id>.flac
    <out>/<name>.tsv   id audio lang text translation meaning_id duration source doc synth voice augment

Manifests (each a plain TSV with a header, no quoting):

- ``open_train.tsv``: training sentences of every language, by the training voices (espeak-ng with its variants,
  and Festival / Piper for the languages they speak), random rate and pitch, augmented; a share of utterances
  joins 2-6 consecutive sentences of one paragraph (text and translation joined too) up to ``--max-seconds``.
- ``open_dev.tsv``: held-out dev chapters, training voices, not augmented (model selection, fusion weight).
- ``open_dev_clean.tsv``: the same dev chapters by the training voices that are not espeak-ng (Festival and
  Piper: English and Italian), not augmented: clean dev speech for the fusion's confidence gate.
- ``open_test_seen.tsv``: held-out test chapters in all nine languages, espeak-ng (a training voice).
- ``open_test_unseen.tsv``: the same chapters spoken by voices never used in training (SVOX Pico for de, es,
  fr, it; Festival's Russian voice for ru), single sentences and joined pairs (for duration buckets).
- ``open_test_en.tsv``: English sentences of the test chapters by Pico (EN->X).

Voices held out of training: all of Pico, and Festival's Russian voice. Every clip's row records its
synthesizer, voice, rate, pitch and augmentation; the plan is seeded, and rerunning skips clips that exist.

    python scripts/synthesize_open.py --text work/open_data/open_text.tsv --out work/open_data --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import multiprocessing as mp
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger("synthesize_open")

SAMPLE_RATE = 16000
X_LANGS = ("fr", "de", "es", "it", "pt", "nl", "pl", "ru", "sv")
HEADER = (
    "id", "audio", "lang", "text", "translation", "meaning_id", "duration", "source", "doc", "synth", "voice",
    "augment",
)  # fmt: skip
# Voices never used in training: the unseen-voice test's.
UNSEEN = {"de": ("pico", "de-DE"), "es": ("pico", "es-ES"), "fr": ("pico", "fr-FR"), "it": ("pico", "it-IT"),
          "ru": ("festival", "msu_ru_nsh_clunits")}  # fmt: skip
UNSEEN_EN = (("pico", "en-US"), ("pico", "en-GB"))
FORTUNE_SHARE = 0.35  # at most this share of a language's training clips are fortune cookies (no translations)
CHARS_PER_SECOND = 14.0  # espeak-ng at its default rate, roughly; only used to plan joined utterances


@dataclass(frozen=True)
class Plan:
    """One clip to render."""

    id: str
    split: str
    lang: str
    text: str
    translation: str
    meaning_id: str
    source: str
    doc: str
    synth: str
    voice: str
    rate: float
    pitch: float
    augment_seed: int  # -1: no augmentation

    def rel_audio(self) -> str:
        return f"audio/{self.split}/{self.lang}/{self.id}.flac"


def read_text(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def paragraphs(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], list[dict[str, str]]]:
    """Rows grouped by (lang, doc, para), sentences in order."""
    out: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        out[(r["lang"], r["doc"], r["para"])].append(r)
    for group in out.values():
        group.sort(key=lambda r: int(r["sent"]))
    return out


def join_runs(group: list[dict[str, str]], rng: random.Random, max_seconds: float) -> list[list[dict[str, str]]]:
    """Split a paragraph's sentences into runs of consecutive sentences (2-6) that fit ``max_seconds``."""
    runs: list[list[dict[str, str]]] = []
    i = 0
    while i < len(group):
        want = rng.randint(2, 6)
        run = [group[i]]
        seconds = len(group[i]["text"]) / CHARS_PER_SECOND
        while len(run) < want and i + len(run) < len(group):
            nxt = group[i + len(run)]
            if int(nxt["sent"]) != int(run[-1]["sent"]) + 1:
                break
            extra = len(nxt["text"]) / CHARS_PER_SECOND
            if seconds + extra > max_seconds:
                break
            run.append(nxt)
            seconds += extra
        runs.append(run)
        i += len(run)
    return runs


def meaning_of(translation: str, fallback: str) -> str:
    """Clips that share an English source share a meaning id (the trainer's false-negative mask)."""
    key = translation or fallback
    return "m" + hashlib.sha1(key.encode()).hexdigest()[:12]


def unit(run: list[dict[str, str]]) -> tuple[str, str]:
    """Joined text and translation of consecutive sentences (translation empty unless every one has one)."""
    text = " ".join(r["text"] for r in run)
    trans = " ".join(r["translation"] for r in run) if all(r["translation"] for r in run) else ""
    return text, trans


# Share of training clips per synthesizer where a language has several (espeak-ng speaks every language).
SYNTH_WEIGHTS = {"espeak": 0.4, "festival": 0.3, "piper": 0.3}


def training_voices(lang: str, available: dict[str, list[str]]) -> dict[str, list[str]]:
    """synth -> voices a training clip of ``lang`` may use: every installed voice but the held-out ones."""
    held = {UNSEEN.get(lang), *(UNSEEN_EN if lang == "en" else ())}
    out = {
        synth: [v for v in voices if (synth, v) not in held]
        for synth, voices in available.items()
        if synth != "pico"
    }
    return {synth: voices for synth, voices in out.items() if voices}


def pick_voice(voices: dict[str, list[str]], rng: random.Random) -> tuple[str, str]:
    """A synthesizer by SYNTH_WEIGHTS (among those with voices), then one of its voices uniformly."""
    synths = sorted(voices)
    synth = rng.choices(synths, weights=[SYNTH_WEIGHTS.get(s, 0.3) for s in synths])[0]
    return synth, rng.choice(voices[synth])


def plan(
    rows: list[dict[str, str]],
    voices_by_lang: dict[str, dict[str, list[str]]],
    *,
    train_per_lang: int,
    join_share: float,
    max_seconds: float,
    augment_share: float,
    seed: int,
) -> list[Plan]:
    """Every clip of every manifest, deterministic for ``seed``.

    Each (split, language) draws from its own random stream, so the held-out clips do not depend on
    ``train_per_lang``, on the other languages, or on which training voices are installed: a rebuild of the test
    sets alone (``--splits test_unseen,...``) gives the clips the whole recipe gives.
    """

    def stream(split: str, lang: str) -> random.Random:
        return random.Random(f"{seed}|{split}|{lang}")  # str seeds hash with SHA-512: stable across runs

    by_para = paragraphs(rows)
    plans: list[Plan] = []

    def make(
        rng: random.Random, split: str, run: list[dict[str, str]], synth: str, voice: str, augment: bool, tag: str
    ) -> Plan:
        text, trans = unit(run)
        lang, first = run[0]["lang"], run[0]
        uid = hashlib.sha1(f"{tag}|{lang}|{text}|{synth}|{voice}".encode()).hexdigest()[:12]
        return Plan(
            id=f"{tag}{uid}_{lang}", split=split, lang=lang, text=text, translation=trans,
            meaning_id=meaning_of(trans, text), source=first["source"], doc=first["doc"], synth=synth,
            voice=voice, rate=round(rng.uniform(0.8, 1.25), 3), pitch=round(rng.uniform(0.85, 1.2), 3),
            augment_seed=rng.randrange(2**31) if augment else -1,
        )  # fmt: skip

    for lang in ("en", *X_LANGS):
        voices = voices_by_lang.get(lang, {})
        train_voices = training_voices(lang, voices)
        if not train_voices:
            log.warning("no training voice for %s: skipped", lang)
            continue
        groups = [g for (glang, _, _), g in sorted(by_para.items()) if glang == lang and g[0]["split"] == "train"]
        rng = stream("train", lang)
        rng.shuffle(groups)
        # Books first (their sentences have English translations for T3), fortunes capped at FORTUNE_SHARE.
        groups.sort(key=lambda g: g[0]["source"] == "fortunes")
        units: list[list[dict[str, str]]] = []
        has_fortunes = any(g[0]["source"] == "fortunes" for g in groups)
        books_cap = train_per_lang - int(FORTUNE_SHARE * train_per_lang) if has_fortunes else train_per_lang
        for g in groups:
            is_fortune = g[0]["source"] == "fortunes"
            if not is_fortune and len(units) >= books_cap:
                continue
            if len(g) > 1 and rng.random() < join_share:
                new = [r for r in join_runs(g, rng, max_seconds) if len(r) > 1]
            else:
                new = [[r] for r in g]
            units.extend(new)
            if len(units) >= train_per_lang:
                break
        for run in units[:train_per_lang]:
            synth, voice = pick_voice(train_voices, rng)
            plans.append(make(rng, "train", run, synth, voice, rng.random() < augment_share, "t"))
        for split in ("dev", "test"):
            held = [g for (glang, _, _), g in sorted(by_para.items()) if glang == lang and g[0]["split"] == split]
            rng, unseen_rng = stream(split, lang), stream(f"{split}_unseen", lang)
            for g in held:
                for r in g:
                    if lang != "en" and not r["translation"]:
                        continue
                    synth, voice = pick_voice({"espeak": train_voices["espeak"]}, rng)
                    if split == "dev":
                        plans.append(make(rng, "dev", [r], synth, voice, False, "d"))
                    elif lang != "en":
                        plans.append(make(rng, "test_seen", [r], synth, voice, False, "s"))
                if split != "test":
                    continue
                unseen = UNSEEN_EN if lang == "en" else (UNSEEN[lang],) if lang in UNSEEN else ()
                unseen = tuple(v for v in unseen if v[1] in voices.get(v[0], []))
                if not unseen:
                    continue
                singles = [[r] for r in g if lang == "en" or r["translation"]]
                pairs = [g[i : i + 2] for i in range(0, len(g) - 1, 2) if all(lang == "en" or r["translation"] for r in g[i : i + 2])]
                for run in singles + ([] if lang == "en" else pairs):
                    synth, voice = unseen_rng.choice(unseen)
                    split_name = "test_en" if lang == "en" else "test_unseen"
                    plans.append(make(unseen_rng, split_name, run, synth, voice, False, "u"))
    # dev_clean, listed last: the dev pages by the training voices that are not espeak-ng (Festival, Piper:
    # English and Italian), the only dev speech Whisper hears as well as clean test voices; where the fusion
    # learns how far to trust Whisper when it is sure.
    for lang in ("en", *X_LANGS):
        clean = {s: v for s, v in training_voices(lang, voices_by_lang.get(lang, {})).items() if s != "espeak"}
        if not clean:
            continue
        rng = stream("dev_clean", lang)
        for (glang, _, _), g in sorted(by_para.items()):
            if glang != lang or g[0]["split"] != "dev":
                continue
            for r in g:
                if lang == "en" or r["translation"]:
                    synth, voice = pick_voice(clean, rng)
                    plans.append(make(rng, "dev_clean", [r], synth, voice, False, "c"))
    return plans


def render(p: Plan, out: Path) -> tuple[str, float, str]:
    """Render one clip (skipped when it exists); returns (id, duration s, augmentation record)."""
    from miner.voices import get_synthesizer
    from miner.voices.augment import augment

    path = out / p.rel_audio()
    record = ""
    if path.exists():
        info = sf.info(str(path))
        rec_path = path.with_suffix(".aug")
        record = rec_path.read_text(encoding="utf-8").strip() if rec_path.exists() else ""
        return p.id, info.frames / info.samplerate, record
    wave = get_synthesizer(p.synth).speak(p.text, p.voice, rate=p.rate, pitch=p.pitch)
    if p.augment_seed >= 0:
        wave, rec = augment(wave, seed=p.augment_seed)
        record = rec.as_string()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.flac")
    sf.write(str(tmp), np.clip(wave, -1, 1), SAMPLE_RATE, subtype="PCM_16")
    if record:
        path.with_suffix(".aug").write_text(record + "\n", encoding="utf-8")
    tmp.replace(path)
    return p.id, len(wave) / SAMPLE_RATE, record


def _render_safe(p: Plan, out: Path) -> tuple[str, float, str, str]:
    try:
        uid, dur, rec = render(p, out)
        return uid, dur, rec, ""
    except Exception as exc:  # one bad sentence must not stop a run of thousands
        return p.id, 0.0, "", f"{type(exc).__name__}: {exc}"


def write_manifest(path: Path, plans: list[Plan], done: dict[str, tuple[float, str]]) -> int:
    tmp = path.with_suffix(".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        f.write("\t".join(HEADER) + "\n")
        for p in plans:
            if p.id not in done or done[p.id][0] <= 0.2:
                continue
            dur, rec = done[p.id]
            voice = f"{p.voice};rate={p.rate};pitch={p.pitch}"
            cells = [p.id, p.rel_audio(), p.lang, p.text, p.translation, p.meaning_id, f"{dur:.3f}", p.source,
                     p.doc, p.synth, voice, rec]  # fmt: skip
            f.write("\t".join(c.replace("\t", " ") for c in cells) + "\n")
            n += 1
    tmp.replace(path)
    return n


def available_voices() -> dict[str, dict[str, list[str]]]:
    """lang -> synth -> voices, for the synthesizers installed here."""
    from miner.voices import all_synthesizers

    out: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for synth in all_synthesizers():
        ok, why = synth.available()
        if not ok:
            log.warning("%s not available: %s", synth.name, why)
            continue
        for lang in ("en", *X_LANGS):
            voices = list(synth.voices(lang))
            if voices:
                out[lang][synth.name] = voices
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", type=Path, default=Path("work/open_data/open_text.tsv"))
    ap.add_argument("--out", type=Path, default=Path("work/open_data"))
    ap.add_argument("--train-per-lang", type=int, default=1500)
    ap.add_argument("--join-share", type=float, default=0.35, help="share of paragraphs spoken as joined runs")
    ap.add_argument("--max-seconds", type=float, default=25.0)
    ap.add_argument("--augment-share", type=float, default=0.7)
    ap.add_argument("--splits", default="test_unseen,test_en,test_seen,dev,train")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    voices = available_voices()
    plans = plan(read_text(args.text), voices, train_per_lang=args.train_per_lang, join_share=args.join_share,
                 max_seconds=args.max_seconds, augment_share=args.augment_share, seed=args.seed)  # fmt: skip
    wanted = args.splits.split(",")
    todo = sorted((p for p in plans if p.split in wanted), key=lambda p: wanted.index(p.split))
    log.info("%d clips planned (%s)", len(todo), {s: sum(p.split == s for p in todo) for s in wanted})
    done: dict[str, tuple[float, str]] = {}
    failures = 0
    t0 = time.time()
    with mp.get_context("fork").Pool(args.jobs) as pool:
        for i, (uid, dur, rec, err) in enumerate(pool.imap(_render_one, [(p, args.out) for p in todo], chunksize=4)):
            if err:
                failures += 1
                log.warning("%s: %s", uid, err)
            else:
                done[uid] = (dur, rec)
            if (i + 1) % 500 == 0:
                log.info("%d/%d clips, %.0f s", i + 1, len(todo), time.time() - t0)
    names = {"train": "open_train", "dev": "open_dev", "test_seen": "open_test_seen",
             "test_unseen": "open_test_unseen", "test_en": "open_test_en", "dev_clean": "open_dev_clean"}  # fmt: skip
    for split in wanted:
        n = write_manifest(args.out / f"{names[split]}.tsv", [p for p in todo if p.split == split], done)
        log.info("%s: %d clips", names[split], n)
    audio_h = sum(d for d, _ in done.values()) / 3600
    log.info("done: %d clips, %.1f h of audio, %d failures, %.0f s", len(done), audio_h, failures, time.time() - t0)
    if failures > 0.05 * max(1, len(todo)):
        sys.exit(f"{failures} of {len(todo)} clips failed: see the log")


def _render_one(args: tuple[Plan, Path]) -> tuple[str, float, str, str]:
    return _render_safe(*args)


if __name__ == "__main__":
    main()
