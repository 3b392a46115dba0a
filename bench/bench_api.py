"""Benchmark the search service: requests/s and p50/p99 latency of POST /search/speech-to-text on a real
uvicorn server, against the same work done in-process (decode -> encode -> search -> rows).

The goal is an HTTP overhead under 10% at p50 with one client (``api p50 / in-process p50 < 1.10``); higher
concurrencies show what micro-batching buys in throughput.

Examples::

    # the demo model (default speech model), a synthetic 50k-sentence database in its space
    python bench/bench_api.py

    # your model and database
    python bench/bench_api.py --speech-model ./samu --home ./data --db en-text --clips ./queries/ \\
        --requests 300 --concurrency 1,8,32 --device cuda --json bench_api.json

Models come from the flags or the usual ``MINER_SPEECH_MODEL`` / ``MINER_TEXT_MODEL`` variables. The server
runs in a subprocess (``miner.commands.serve.serve_command``) after the in-process run has freed its models,
so the two never compete for the device.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench_api")


def _percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def _synthetic_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = rng.uniform(100, 220)
    sig = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 5))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
    return (0.2 * sig * env + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def load_clips(paths: list[str], n_synthetic: int, seconds: float, seed: int) -> list[bytes]:
    """Query uploads: the given audio files (or folders of them), else seeded synthetic WAV clips."""
    if paths:
        from miner.audio import iter_audio_files

        files = [f for p in paths for f in iter_audio_files(p)]
        if not files:
            raise SystemExit(f"no audio files found in {paths}")
        return [f.read_bytes() for f in files]
    import io

    import soundfile as sf

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_synthetic):
        buf = io.BytesIO()
        sf.write(
            buf, _synthetic_clip(rng, seconds * rng.uniform(0.8, 1.2)), 16000, format="WAV", subtype="PCM_16"
        )
        out.append(buf.getvalue())
    return out


def build_synthetic_db(home: Path, name: str, size: int, dim: int, space_id: str, seed: int) -> None:
    """A text database of ``size`` random unit vectors in the model's space (content does not matter here)."""
    from index.build import build_index

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((size, dim)).astype(np.float32)
    rows = [{"id": f"syn{i}", "text": f"synthetic sentence {i}", "lang": "xx"} for i in range(size)]
    build_index(home / name, vectors, rows, space_id=space_id, kind="text", factory="Flat")
    log.info("built synthetic database %s: %d x %d in space %s", home / name, size, dim, space_id)


def bench_in_process(
    args: argparse.Namespace, speech: Any, folder: Path, clips: list[bytes]
) -> dict[str, Any]:
    """The API's work without HTTP: decode, encode one clip, search, fetch rows; sequential."""
    from api.audio_input import decode_upload
    from miner.databases import open_database

    db = open_database(folder)
    try:

        def one(data: bytes) -> None:
            wav = decode_upload(data, max_seconds=args.max_audio_seconds)
            vec = speech.encode([wav], batch_size=1)
            db.search(vec, args.k)

        for i in range(args.warmup):
            one(clips[i % len(clips)])
        latencies = []
        start = time.perf_counter()
        for i in range(args.requests):
            t0 = time.perf_counter()
            one(clips[i % len(clips)])
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
    finally:
        db.close()
    return {"requests": args.requests, "rps": args.requests / wall, **_percentiles(latencies)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, home: Path, db: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "MINER_HOME": str(home),
            "MINER_DATABASES": db,
            "MINER_BATCH_SIZE": str(args.batch_size),
            "MINER_BATCH_WAIT_MS": str(args.batch_wait_ms),
            "MINER_MAX_AUDIO_SECONDS": str(args.max_audio_seconds),
            "MINER_MAX_K": str(max(args.k, 100)),
            "MINER_API_KEYS": "",
            "MINER_QUEUE_SIZE": str(max(256, 4 * max(args.concurrency))),
        }
    )
    for key, value in (
        ("MINER_SPEECH_MODEL", args.speech_model),
        ("MINER_TEXT_MODEL", args.text_model),
        ("MINER_DEVICE", args.device),
    ):
        if value:
            env[key] = value
    code = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from miner.commands.serve import serve_command;"
        f"serve_command('127.0.0.1', {port}, log_level='warning')"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"the server exited with code {proc.returncode} before it was ready (see its log)"
            )
        try:
            r = httpx.get(f"{url}/readyz", timeout=5)
            if r.status_code == 200:
                return
            if r.json().get("status") == "failed":
                raise SystemExit(f"the server failed to load: {r.json().get('detail')}")
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


async def _load(
    url: str, db: str, k: int, clips: list[bytes], n: int, concurrency: int
) -> tuple[list[float], float]:
    import httpx

    latencies: list[float] = []
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for i in counter:
                t0 = time.perf_counter()
                r = await client.post(
                    "/search/speech-to-text",
                    files={"audio": ("q.wav", clips[i % len(clips)], "audio/wav")},
                    data={"text_db": db, "k": str(k)},
                )
                if r.status_code != 200:
                    raise SystemExit(f"request {i} failed: {r.status_code} {r.text[:300]}")
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def bench_server(
    args: argparse.Namespace, url: str, db: str, clips: list[bytes]
) -> dict[int, dict[str, Any]]:
    results = {}
    for c in args.concurrency:
        asyncio.run(_load(url, db, args.k, clips, max(args.warmup, c), c))  # warm-up
        latencies, wall = asyncio.run(_load(url, db, args.k, clips, args.requests, c))
        results[c] = {"requests": args.requests, "rps": args.requests / wall, **_percentiles(latencies)}
        log.info(
            "concurrency %d: %.1f req/s, p50 %.1f ms, p99 %.1f ms",
            c,
            results[c]["rps"],
            results[c]["p50_ms"],
            results[c]["p99_ms"],
        )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--speech-model",
        default=os.environ.get("MINER_SPEECH_MODEL"),
        help="SAMU model folder (default $MINER_SPEECH_MODEL, else the demo model)",
    )
    p.add_argument(
        "--text-model",
        default=os.environ.get("MINER_TEXT_MODEL"),
        help="text encoder (default: the speech model's teacher)",
    )
    p.add_argument(
        "--home", type=Path, help="data root holding --db (default: a temp dir with a synthetic db)"
    )
    p.add_argument("--db", help="text database to search (default: a synthetic one, see --synthetic-size)")
    p.add_argument("--synthetic-size", type=int, default=50_000, help="vectors in the synthetic database")
    p.add_argument("--clips", nargs="*", default=[], help="query audio files or folders (default: synthetic)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of synthetic clips")
    p.add_argument("--requests", type=int, default=200, help="timed requests per run")
    p.add_argument("--warmup", type=int, default=10, help="untimed requests before each run")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated client concurrencies")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--max-audio-seconds", type=float, default=60.0)
    p.add_argument(
        "--ready-timeout", type=float, default=900.0, help="seconds to wait for the server to load"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if args.db and not args.home:
        p.error("--db needs --home")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the results
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    from miner.encoders.samu import load_speech_encoder

    clips = load_clips(args.clips, 16, args.seconds, args.seed)
    speech = load_speech_encoder(args.speech_model, device=args.device)
    log.info(
        "speech model %s on %s (space %s, dim %d)",
        speech.model_id,
        speech.device,
        speech.space_id,
        speech.dim,
    )
    with tempfile.TemporaryDirectory(prefix="bench_api_") as tmp:
        home, db = (args.home, args.db) if args.db else (Path(tmp), "synthetic")
        if not args.db:
            build_synthetic_db(home, db, args.synthetic_size, speech.dim, speech.space_id, args.seed)
        inproc = bench_in_process(args, speech, home / db, clips)
        log.info(
            "in-process: %.1f req/s, p50 %.1f ms, p99 %.1f ms",
            inproc["rps"],
            inproc["p50_ms"],
            inproc["p99_ms"],
        )
        model_id, device = speech.model_id, str(speech.device)
        del speech
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(args, home, db, port)
        try:
            wait_ready(url, proc, args.ready_timeout)
            api = bench_server(args, url, db, clips)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    report = {
        "model": model_id,
        "device": device,
        "database": db,
        "k": args.k,
        "clips": len(clips),
        "in_process": inproc,
        "api": api,
    }
    print(f"\nspeech-to-text, model {model_id} on {device}, k={args.k}, {args.requests} requests per run")
    print(f"{'run':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(
        f"{'in-process (seq.)':<22}{inproc['rps']:>10.1f}{inproc['p50_ms']:>10.1f}{inproc['p99_ms']:>10.1f}"
    )
    for c, r in api.items():
        print(f"{f'API, concurrency {c}':<22}{r['rps']:>10.1f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}")
    lowest = min(api)
    ratio = api[lowest]["p50_ms"] / inproc["p50_ms"]
    verdict = "OK" if ratio < 1.10 else "over the 10% goal"
    print(f"API p50 (concurrency {lowest}) / in-process p50 = {ratio:.3f} ({verdict})")
    report["overhead_p50"] = ratio
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


if __name__ == "__main__":
    main()
