"""`miner mine` and `miner export`."""

from __future__ import annotations

from pathlib import Path

import typer

from miner.encoders.speech_spec import SPEECH_MODEL_HELP


def mine_command(
    audio_dir: Path = typer.Option(..., exists=True, file_okay=False, help="Folder of audio (recursive)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (rerun the same command to resume)."),
    text_db: str | None = typer.Option(None, help="Text database to mine against."),
    speech_db: str | None = typer.Option(None, help="Speech database (speech-to-speech mining)."),
    text_file: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="Corpus embedded on the fly."
    ),
    model: str | None = typer.Option(None, help=SPEECH_MODEL_HELP),
    k: int = typer.Option(4, "-k", "--k", min=1, help="Neighbourhood size of the margin."),
    margin: str = typer.Option("ratio", help="ratio | distance | absolute"),
    mode: str = typer.Option("max", help="fwd | bwd | intersect | max (one-to-one) | union"),
    threshold: float = typer.Option(
        1.0, help="Keep pairs scoring strictly above this (calibrate with `miner eval calibrate`)."
    ),
    segment: str = typer.Option(
        "file", help="file (one utterance per file) | vad (silero-vad candidate windows)"
    ),
    min_seconds: float = typer.Option(1.0, help="Shortest candidate window (vad)."),
    max_seconds: float = typer.Option(20.0, help="Longest candidate window (vad)."),
    max_pause_seconds: float = typer.Option(2.0, help="Windows never span a longer pause (vad)."),
    lang: str | None = typer.Option(
        None, help="Language of the audio, recorded in the outputs (asr / fused: Whisper transcribes in it)."
    ),
    backward: str = typer.Option(
        "auto", help="auto | candidates | all: targets whose backward kNN is computed."
    ),
    backward_index: str = typer.Option(
        "auto",
        help="auto | flat | ivf: index over the segments for backward kNN (auto: IVF once targets x segments "
        "x dim reaches 4e12, ~45k segments at 768-d; it halved that step at 100k; approximate: ~2% of pairs "
        "changed on real embeddings; flat: exact).",
    ),
    batch_size: int = typer.Option(8, min=1, help="Clips per speech-encoder forward pass."),
    home: Path | None = typer.Option(None, help="Data root (default $MINER_HOME or ./data)."),
    engine: str = typer.Option("local", help="local (in this process) | ray (Ray Data actor pools)."),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray for this job)."
    ),
    workers: int = typer.Option(
        1, min=1, help="Ray workers, one model each (one GPU each when there are GPUs)."
    ),
) -> None:
    """Mine aligned speech-text (or speech-speech) pairs and write pairs.tsv, pairs.jsonl and summary.json."""
    from miner.database_build import database_folder
    from miner.distributed import check_engine
    from miner.encoders.samu import load_speech_encoder
    from miner.encoders.text import load_text_encoder_for
    from miner.knn import BACKWARD_INDEXES
    from miner.margin import parse_margin
    from miner.mine import parse_mode
    from miner.mine_job import MineOptions, database_target, run_mine, text_file_target

    if sum(x is not None for x in (text_db, speech_db, text_file)) != 1:
        raise typer.BadParameter("pass exactly one of --text-db, --speech-db or --text-file")
    parse_margin(margin), parse_mode(mode)  # fail before any work
    check_engine(engine)
    if segment not in ("file", "vad"):
        raise typer.BadParameter(f"--segment {segment!r}: use file or vad")
    if backward not in ("auto", "candidates", "all"):
        raise typer.BadParameter(f"--backward {backward!r}: use auto, candidates or all")
    if backward_index not in BACKWARD_INDEXES:
        raise typer.BadParameter(f"--backward-index {backward_index!r}: use {', '.join(BACKWARD_INDEXES)}")
    opts = MineOptions(
        k=k,
        margin=margin,
        mode=mode,
        threshold=threshold,
        segment=segment,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        max_pause_seconds=max_pause_seconds,
        lang=lang,
        backward=backward,
        backward_index=backward_index,
        batch_size=batch_size,
    )
    encoder = load_speech_encoder(model)
    folder = None
    if text_file is not None:
        text_encoder = load_text_encoder_for(encoder)
        target, kind = str(text_file), "text"

        def open_target():  # type: ignore[no-untyped-def]
            return text_file_target(text_file, text_encoder, out / "cache")
    else:
        name = text_db or speech_db
        assert name is not None
        folder = database_folder(name, home)
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(
                f"database {name!r} not found under {folder.parent}: build it with `miner index build`"
            )
        target, kind = name, "text" if text_db else "speech"

        def open_target():  # type: ignore[no-untyped-def]
            t = database_target(folder)
            if t["kind"] != kind:
                raise ValueError(
                    f"database {name!r} is a {t['kind']} database; pass it with --{t['kind']}-db"
                )
            return t

    if engine == "ray":
        from miner.distributed import RayOptions, ray_run_mine

        summary = ray_run_mine(
            audio_dir,
            out,
            speech_encoder=encoder,
            model_path=model,
            target=target,
            target_kind=kind,
            open_target=open_target,
            opts=opts,
            ray=RayOptions(address=ray_address, workers=workers),
            db_folder=folder,
        )
    else:
        summary = run_mine(
            audio_dir,
            out,
            speech_encoder=encoder,
            target=target,
            target_kind=kind,
            open_target=open_target,
            opts=opts,
        )
    typer.echo(
        f"{summary.pairs} pairs from {summary.segments} segments of {summary.files} files "
        f"({summary.files_failed} failed to decode, see failures.tsv) -> {out / 'pairs.tsv'}"
    )


def export_command(
    pairs: Path = typer.Option(..., exists=True, help="pairs.tsv of a mining run (or its folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Export folder."),
    format: str = typer.Option(..., "--format", "-f", help="fairseq-s2t | hf-audiofolder | moses"),
    min_score: float | None = typer.Option(None, help="Keep pairs scoring strictly above this."),
    target_lang: str = typer.Option("en", help="Language code of the text side (file names)."),
) -> None:
    """Cut the aligned segments into FLAC files and write the manifests the named toolkit reads."""
    from miner.export import export_pairs

    path = pairs / "pairs.tsv" if pairs.is_dir() else pairs
    n = export_pairs(path, out, format, min_score=min_score, target_lang=target_lang)
    typer.echo(f"exported {n} pairs as {format} to {out}")
