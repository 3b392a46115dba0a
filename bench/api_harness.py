"""The two sides that bench_api.py times: a real uvicorn server in its own process, and the in-process baseline.

Both are started the same way (pinned to the same CPUs from their first instruction, the model loaded in a
helper thread) so that the only difference left between them is HTTP.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def pin(cpus: set[int] | None) -> None:
    """Restrict the calling process (its threads created from now on) to ``cpus`` (Linux; like ``taskset``)."""
    if cpus:
        os.sched_setaffinity(0, cpus)


def _in_process_worker(conn: Connection, args: argparse.Namespace) -> None:
    """The API's work without HTTP, in a process of its own pinned like the server: decode the same bytes,
    encode one clip, search, fetch rows. Answers ``("run", i)`` with the seconds request ``i`` took."""
    logging.basicConfig(level=logging.WARNING)
    from api.audio_input import decode_upload
    from miner.databases import open_database
    from miner.encoders.samu import load_speech_encoder

    # Load in a helper thread that stays alive, as the server loads in its executor thread. libgomp (torch's
    # OpenMP) spin-waits hard while only one thread has ever run torch ops and much less once a second one
    # has; on a busy CPU the first case made the same encode up to 10x slower here (0.9 s vs 90 ms).
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load")
    speech = loader.submit(load_speech_encoder, args.speech_model, device=args.device).result()
    conn.send((speech.model_id, str(speech.device), speech.dim, speech.space_id))
    folder, clips = conn.recv()
    db = open_database(folder)
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            if msg[0] == "batched":
                conn.send(_batched_rate(speech, db, clips, args, batch=msg[1], n=msg[2]))
                continue
            data = clips[msg[1] % len(clips)]
            t0 = time.perf_counter()
            wav = decode_upload(data, max_seconds=args.max_audio_seconds)
            vec = speech.encode([wav], batch_size=args.batch_size)
            db.search(vec, args.k)  # ids, scores, margins and the stored rows, as the server returns
            conn.send(time.perf_counter() - t0)
    finally:
        db.close()
        loader.shutdown()


def _batched_rate(
    speech: Any, db: Any, clips: list[bytes], args: argparse.Namespace, batch: int, n: int
) -> float:
    """Clips per second of decode -> encode in batches of ``batch`` -> search -> rows, without HTTP: the
    ceiling the served API's micro-batching aims at. One untimed batch first."""
    from api.audio_input import decode_upload

    extra = {"batch_seconds": args.batch_seconds} if getattr(speech, "kind", "") == "samu" else {}

    def run(count: int, start: int) -> None:
        wavs = [
            decode_upload(clips[(start + j) % len(clips)], max_seconds=args.max_audio_seconds)
            for j in range(count)
        ]
        db.search(speech.encode(wavs, batch_size=batch, **extra), args.k)

    run(batch, 0)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        run(min(batch, n - start), start)
    return n / (time.perf_counter() - t0)


class InProcess:
    """Handle on the in-process baseline (a spawned process; see :func:`_in_process_worker`)."""

    def __init__(self, args: argparse.Namespace, cpus: set[int] | None):
        ctx = mp.get_context("spawn")  # a fresh interpreter: no torch state inherited from this process
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_in_process_worker, args=(child, args), daemon=True)
        # Pinned from its first instruction, as the server is: OpenBLAS, libgomp and torch size their thread
        # pools from the CPUs allowed when they load (numpy loads before any code of ours could pin it);
        # pinning later left numpy's 2-thread OpenBLAS in the baseline and made it ~20% slower than the server.
        allowed = os.sched_getaffinity(0)
        pin(cpus)
        try:
            self._proc.start()
        finally:
            os.sched_setaffinity(0, allowed)
        self.model_id, self.device, self.dim, self.space_id = self._conn.recv()

    def open(self, folder: Path, clips: list[bytes]) -> None:
        self._conn.send((str(folder), clips))

    def run(self, i: int) -> float:
        self._conn.send(("run", i))
        return float(self._conn.recv())

    def batched_rate(self, batch: int, n: int) -> float:
        """Clips per second when ``n`` clips are encoded and searched in batches of ``batch`` in-process."""
        self._conn.send(("batched", batch, n))
        return float(self._conn.recv())

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send(("stop",))
            self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    args: argparse.Namespace, home: Path, db: str, port: int, cpus: set[int] | None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "MINER_HOME": str(home),
            "MINER_DATABASES": db,
            "MINER_BATCH_SIZE": str(args.batch_size),
            **({"MINER_BATCH_SECONDS": str(args.batch_seconds)} if args.batch_seconds else {}),
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
    return subprocess.Popen([sys.executable, "-c", code], env=env, preexec_fn=lambda: pin(cpus))


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """:func:`api.probe.wait_until_ready`, ending the benchmark with its reason when the server is not ready."""
    from api.probe import ServerNotReady, wait_until_ready

    try:
        wait_until_ready(url, proc, timeout)
    except ServerNotReady as exc:
        raise SystemExit(str(exc)) from None
