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

    # server and in-process baseline on CPU 1, the client on CPU 0 (the demo database, real clips)
    python bench/bench_api.py --home <home> --db demo-en --clips miner/demo_assets/clips \\
        --server-cpus 1 --client-cpus 0

What is compared: the in-process baseline runs in a process of its own, set up like the server (same model
loader, model loaded in a helper thread, same pinning) and does per request what the server does that is not
HTTP: decode the same uploaded bytes, encode one clip, search, fetch the stored rows. At concurrency 1 each
clip goes once in-process and once through the API back to back (alternating which goes first), so a busy
machine slows both alike; the client is ``http.client`` on one keep-alive connection (``--client httpx`` for
``httpx.Client``) sending multipart bodies built beforehand. Higher concurrencies run the API alone, one
persistent ``httpx.AsyncClient`` each. While they are paired, the baseline and the server each hold the model
(two copies on the device); the baseline exits before the concurrent runs.

Models come from the flags or the usual ``MINER_SPEECH_MODEL`` / ``MINER_TEXT_MODEL`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from api_harness import InProcess, free_port, pin, start_server, wait_ready

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


def encode_uploads(db: str, k: int, clips: list[bytes]) -> list[tuple[bytes, dict[str, str]]]:
    """Each clip's multipart/form-data body and headers, built once, so the timed client only sends bytes."""
    import httpx

    out = []
    for data in clips:
        request = httpx.Request(
            "POST",
            "http://server/search/speech-to-text",
            files={"audio": ("query", data, "application/octet-stream")},
            data={"text_db": db, "k": str(k)},
        )
        out.append((request.read(), {"content-type": request.headers["content-type"]}))
    return out


def sync_sender(
    url: str, kind: str
) -> tuple[Callable[[bytes, dict[str, str]], tuple[int, bytes]], Callable[[], None]]:
    """A client on one keep-alive connection: ``(send(body, headers) -> (status, body), close)``.

    ``stdlib`` (``http.client``) is the lighter one: about 1 ms less per request than ``httpx.Client`` on the
    2-core test machine, time that is the client's, not the server's.
    """
    if kind == "httpx":
        import httpx

        client = httpx.Client(base_url=url, timeout=120)

        def send_httpx(body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
            r = client.post("/search/speech-to-text", content=body, headers=headers)
            return r.status_code, r.content

        return send_httpx, client.close
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)

    def send_stdlib(body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn.request("POST", "/search/speech-to-text", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()

    return send_stdlib, conn.close


def paired_run(
    args: argparse.Namespace, url: str, db: str, clips: list[bytes], inproc: InProcess
) -> tuple[dict[str, Any], dict[str, Any], list[tuple[float, float]]]:
    """Concurrency 1: each clip once in-process and once through the API, back to back, alternating which
    goes first, so both see the same load on the machine. One keep-alive connection, a synchronous client.

    Returns:
        (in-process stats, API stats, (in-process, API) seconds of each clip).
    """
    uploads = encode_uploads(db, args.k, clips)
    send, close = sync_sender(url, args.client)

    def api(i: int) -> float:
        body, headers = uploads[i % len(uploads)]
        t0 = time.perf_counter()
        status, answer = send(body, headers)
        took = time.perf_counter() - t0
        if status != 200:
            raise SystemExit(f"request {i} failed: {status} {answer[:300]!r}")
        return took

    try:
        for i in range(args.warmup):
            inproc.run(i)
            api(i)
        local: list[float] = []
        remote: list[float] = []
        for i in range(args.requests):
            if i % 2:
                remote.append(api(i))
                local.append(inproc.run(i))
            else:
                local.append(inproc.run(i))
                remote.append(api(i))
    finally:
        close()
    # sequential runs: requests/s = 1 / mean latency (the time between requests is not either side's)
    stats = [{"requests": len(x), "rps": len(x) / sum(x), **_percentiles(x)} for x in (local, remote)]
    return stats[0], stats[1], list(zip(local, remote, strict=True))


async def _load(
    url: str, db: str, k: int, clips: list[bytes], n: int, warmup: int, concurrency: int
) -> tuple[list[float], float]:
    import httpx

    latencies: list[float] = []
    uploads = encode_uploads(db, k, clips)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(counter: Iterator[int], out: list[float]) -> None:
            for i in counter:
                body, headers = uploads[i % len(uploads)]
                t0 = time.perf_counter()
                r = await client.post("/search/speech-to-text", content=body, headers=headers)
                if r.status_code != 200:
                    raise SystemExit(f"request {i} failed: {r.status_code} {r.text[:300]}")
                out.append(time.perf_counter() - t0)

        warm = iter(range(max(warmup, concurrency)))  # also opens the keep-alive connections
        await asyncio.gather(*(worker(warm, []) for _ in range(concurrency)))
        counter = iter(range(n))
        start = time.perf_counter()
        await asyncio.gather(*(worker(counter, latencies) for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def bench_server(
    args: argparse.Namespace, url: str, db: str, clips: list[bytes]
) -> dict[int, dict[str, Any]]:
    """The API alone at each concurrency above 1 (a persistent async client per run)."""
    results = {}
    for c in args.concurrency:
        if c == 1:
            continue  # measured by paired_run
        with GpuSampler() as gpu:
            latencies, wall = asyncio.run(_load(url, db, args.k, clips, args.requests, args.warmup, c))
        results[c] = {"requests": args.requests, "rps": args.requests / wall, **_percentiles(latencies)}
        if gpu.samples:
            results[c]["gpu_util_mean"] = float(np.mean(gpu.samples))
        log.info(
            "concurrency %d: %.1f req/s, p50 %.1f ms, p99 %.1f ms",
            c,
            results[c]["rps"],
            results[c]["p50_ms"],
            results[c]["p99_ms"],
        )
    return results


class GpuSampler:
    """GPU utilisation (%) sampled every 100 ms through NVML while the block runs; no samples without NVML."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (CPU machine, library missing): nothing to sample
            return self

        def run() -> None:
            while not self._stop.wait(0.1):
                self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _cpus(text: str | None) -> set[int] | None:
    """``"0"``, ``"0,2"`` or ``"0-3"`` -> CPU numbers; None when not given."""
    if not text:
        return None
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


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
    p.add_argument(
        "--concurrency",
        default="1,8,32",
        help="comma-separated client concurrencies; 1 always runs, paired with the in-process baseline",
    )
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--device", default=None, help="torch device (default: CUDA when available)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--batch-seconds", type=float, default=None, help="audio seconds per speech forward pass")
    p.add_argument(
        "--batched-baseline",
        type=int,
        default=0,
        help="also time in-process decode+encode+search in batches of this many clips (0: skip): the ceiling "
        "that the API's throughput at high concurrency is compared with",
    )
    p.add_argument("--max-audio-seconds", type=float, default=60.0)
    p.add_argument(
        "--ready-timeout", type=float, default=900.0, help="seconds to wait for the server to load"
    )
    p.add_argument(
        "--server-cpus",
        help="pin the server and the in-process baseline to these CPUs, e.g. 1 or 2-3 (like taskset -c)",
    )
    p.add_argument("--client-cpus", help="pin the load-generating client to these CPUs, e.g. 0")
    p.add_argument(
        "--client",
        choices=("stdlib", "httpx"),
        default="stdlib",
        help="concurrency-1 client: http.client (lighter) or httpx.Client; both keep one connection alive",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.concurrency = sorted({1, *(int(c) for c in str(args.concurrency).split(",") if c.strip())})
    args.server_cpus, args.client_cpus = _cpus(args.server_cpus), _cpus(args.client_cpus)
    if args.db and not args.home:
        p.error("--db needs --home")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the results
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    clips = load_clips(args.clips, 16, args.seconds, args.seed)
    inproc = InProcess(args, args.server_cpus)
    log.info(
        "speech model %s on %s (space %s, dim %d)",
        inproc.model_id,
        inproc.device,
        inproc.space_id,
        inproc.dim,
    )
    proc: subprocess.Popen[bytes] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench_api_") as tmp:
            home, db = (args.home, args.db) if args.db else (Path(tmp), "synthetic")
            if not args.db:
                build_synthetic_db(home, db, args.synthetic_size, inproc.dim, inproc.space_id, args.seed)
            inproc.open(home / db, clips)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start_server(args, home, db, port, args.server_cpus)
            wait_ready(url, proc, args.ready_timeout)
            pin(args.client_cpus)  # after the spawns: this thread alone runs the client
            local, remote, pairs = paired_run(args, url, db, clips, inproc)
            batched = (
                inproc.batched_rate(args.batched_baseline, max(args.requests, 4 * args.batched_baseline))
                if args.batched_baseline
                else None
            )
            inproc.close()  # frees its model before the load runs
            api = {1: remote, **bench_server(args, url, db, clips)}
    finally:
        inproc.close()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    ratio = api[1]["p50_ms"] / local["p50_ms"]
    # per clip, back to back: robust to the load of a busy machine changing over the run
    overhead_ms = float(np.median([api_s - loc for loc, api_s in pairs]) * 1000.0)
    paired_ratio = float(np.median([api_s / loc for loc, api_s in pairs]))
    report = {
        "model": inproc.model_id,
        "device": inproc.device,
        "database": db,
        "k": args.k,
        "clips": len(clips),
        "server_cpus": sorted(args.server_cpus or []),
        "client_cpus": sorted(args.client_cpus or []),
        "client": args.client,
        "in_process": local,
        "api": api,
        "overhead_p50": ratio,
        "overhead_ms_median": overhead_ms,
        "paired_ratio_median": paired_ratio,
        "batch_size": args.batch_size,
        "batch_seconds": args.batch_seconds,
    }
    if batched is not None:
        report["in_process_batched"] = {"batch": args.batched_baseline, "rps": batched}
        report["api_rps_over_batched"] = {c: r["rps"] / batched for c, r in api.items()}
    pinning = (
        f"server and in-process on CPUs {report['server_cpus']}, client on {report['client_cpus'] or 'any'}"
        if args.server_cpus or args.client_cpus
        else "no CPU pinning"
    )
    print(
        f"\nspeech-to-text, model {inproc.model_id} on {inproc.device}, k={args.k}, {args.requests} requests per run"
    )
    print(
        f"({pinning}; in-process and API concurrency 1 interleaved request by request, {args.client} client)"
    )
    print(f"{'run':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'in-process (seq.)':<22}{local['rps']:>10.1f}{local['p50_ms']:>10.1f}{local['p99_ms']:>10.1f}")
    for c, r in api.items():
        print(f"{f'API, concurrency {c}':<22}{r['rps']:>10.1f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}")
    if batched is not None:
        print(f"{f'in-process, batch {args.batched_baseline}':<22}{batched:>10.1f}")
        for c, r in api.items():
            print(f"API concurrency {c} / in-process batched: {r['rps'] / batched:.2f}"
                  + (f" (GPU busy {r['gpu_util_mean']:.0f}%)" if "gpu_util_mean" in r else ""))  # fmt: skip
    verdict = "OK" if ratio <= 1.10 else "over the 10% goal"
    print(f"API p50 (concurrency 1) / in-process p50 = {ratio:.3f} ({verdict})")
    print(
        f"same clip back to back: median API - in-process = {overhead_ms:.2f} ms, "
        f"median API / in-process = {paired_ratio:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


if __name__ == "__main__":
    main()
