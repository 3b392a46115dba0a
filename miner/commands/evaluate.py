"""`miner eval retrieval|calibrate`: the paper's retrieval metrics and BUCC-style threshold calibration."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

log = logging.getLogger(__name__)

eval_app = typer.Typer(
    help="Evaluate retrieval (R@1, R@5, WER) or calibrate a mining threshold.", no_args_is_help=True
)

SearchFn = Callable[[Any, int], tuple[Any, Any]]


# -- databases ------------------------------------------------------------------------------------------------
def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def exact_search(db: Any) -> SearchFn:
    """Exact inner-product search over float32 (m, d) L2-normalised rows (faiss Flat, else numpy)."""
    import numpy as np

    db = np.ascontiguousarray(db, dtype=np.float32)
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency; numpy keeps this usable without it
        faiss_index = None
    else:
        faiss_index = faiss.IndexFlatIP(db.shape[1])
    if faiss_index is not None:
        index = faiss_index
        index.add(db)

        def search(q: Any, k: int) -> tuple[Any, Any]:
            return index.search(np.ascontiguousarray(q, dtype=np.float32), min(k, len(db)))

        return search

    def search_np(q: Any, k: int) -> tuple[Any, Any]:
        sims = np.asarray(q, dtype=np.float32) @ db.T
        k = min(k, len(db))
        ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, ids, axis=1), ids.astype(np.int64)

    return search_np


def corpus_database(
    path: Path, text_encoder: Any, root: Path | None = None
) -> tuple[SearchFn, Callable[[int], str]]:
    """A corpus file (txt: one sentence per line, or tsv / jsonl / parquet) embedded once and searched exactly.

    Embeddings are cached in ``<data root>/cache/corpus/<sha of the file>-<space id>.npy``.
    """
    import numpy as np

    from miner.corpus import read_corpus
    from miner.home import data_root

    texts = [s.text for s in read_corpus(path)]
    if not texts:
        raise ValueError(f"corpus {path} holds no sentences")
    cache = data_root(root) / "cache" / "corpus" / f"{_file_sha(path)[:16]}-{text_encoder.space_id}.npy"
    emb = np.load(cache) if cache.is_file() else None
    if emb is None or emb.shape != (len(texts), text_encoder.dim):
        log.info("embedding %d sentences of %s (space %s)", len(texts), path, text_encoder.space_id)
        emb = text_encoder.encode(texts, progress=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, cache)
    else:
        log.info("corpus embeddings from cache %s", cache)
    return exact_search(emb), lambda i: texts[i]


def named_database(
    name: str, space_id: str, root: Path | None = None
) -> tuple[SearchFn, Callable[[int], str]]:
    """A text database built under the data root (``<data root>/<name>/manifest.json``)."""
    from miner.home import check_name, data_root

    check_name(name)
    folder = data_root(root) / name
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(
            f"database {name!r} not found: no file {name!r} here and no database folder {folder}; pass a corpus "
            "file (one sentence per line, or tsv / jsonl / parquet) or the name of a built database"
        )
    from index.sharded import ShardedIndex
    from index.store import Store

    index = ShardedIndex.load(folder)
    index.check_space(space_id)
    store = Store.open(folder / "store.sqlite")

    def id_to_text(i: int) -> str:
        text = store.get(i).get("text")
        if text is None:
            raise ValueError(f"database {name!r} is not a text database (id {i} has no text)")
        return str(text)

    return index.search, id_to_text


def open_database(db: str, text_encoder: Any) -> tuple[SearchFn, Callable[[int], str]]:
    path = Path(db).expanduser()
    if path.is_file():
        return corpus_database(path, text_encoder)
    return named_database(db, text_encoder.space_id)


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
        help="Corpus file to search (embedded on the fly, cached) or the name of "
        "a database under the data root.",
    ),
    model: str | None = typer.Option(
        None, help="SAMU model folder (default: $MINER_SPEECH_MODEL or the demo model)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write all results as JSON here."),
    k: int = typer.Option(5, min=1, help="R@1 and R@k are reported."),
    gold: str = typer.Option(
        "translation",
        help="Manifest column holding the text each query should retrieve: "
        "'translation' (speech translation retrieval) or 'text'.",
    ),
    baseline: str | None = typer.Option(None, help="Also score a baseline: 'asr' (not available yet)."),
    topline: bool = typer.Option(True, help="Also score the text encoder on the gold transcripts."),
    batch_size: int = typer.Option(8, min=1, help="Clips per forward pass."),
) -> None:
    """Speech-to-text retrieval: R@1, R@k and WER of the top-1 text per language, as in the paper's tables."""
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.text import load_text_encoder_for
    from miner.evaluate import evaluate_retrieval, format_table
    from miner.spaces import check_same_space
    from miner.train.data import load_utterance_audio, read_manifest

    if gold not in ("translation", "text"):
        raise typer.BadParameter(f"--gold must be 'translation' or 'text', got {gold!r}")
    if baseline is not None:
        if baseline != "asr":
            raise typer.BadParameter(f"unknown baseline {baseline!r}: the only baseline is 'asr'")
        raise ValueError("the ASR baseline is not available yet: run without --baseline")
    utts = read_manifest(queries, require_text=topline, require_lang=True)
    gold_texts = _gold(utts, gold)
    langs = [u.lang for u in utts]
    speech = load_speech_encoder(model)
    text_encoder = load_text_encoder_for(speech)
    check_same_space(
        speech.space_id, text_encoder.space_id, "speech model", "text encoder", speech.dim, text_encoder.dim
    )
    search, id_to_text = open_database(db, text_encoder)
    waves = [load_utterance_audio(u) for u in utts]
    q = speech.encode(waves, batch_size=batch_size, progress=True)
    results = evaluate_retrieval(q, search, id_to_text, gold_texts, langs, k=k)
    top = None
    if topline:
        t = text_encoder.encode([u.text for u in utts])
        top = evaluate_retrieval(t, search, id_to_text, gold_texts, langs, k=k)
    typer.echo(format_table(results, topline=top))
    if json_out is not None:
        payload = {
            "queries": str(queries),
            "db": db,
            "model": model,
            "space_id": speech.space_id,
            "k": k,
            "gold": gold,
            "samu": results,
            "topline": top,
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        typer.echo(f"wrote {json_out}")


# -- calibration ----------------------------------------------------------------------------------------------
def _read_table(path: Path) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".json"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))


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
