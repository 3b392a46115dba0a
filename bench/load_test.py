"""Load test of a real `miner serve` with the demo model: N clients for S seconds, then a burst of B requests.

Each client loops: a spoken query (a demo clip) to /search/speech-to-text, or every fourth time a sentence to
/search/text-to-text, and records status and latency. The server runs in its own process with the admission
settings given (expected-wait limit, request deadline); its RSS is sampled from /proc every 0.2 s. What it
reports: requests/s answered 200, p50 / p99 latency (all answers and 200s alone), the share of 503s, other
statuses (there must be none), client timeouts, peak RSS.

    python bench/load_test.py --clients 32 --seconds 60 --burst 200 --json load.json

tests/test_load.py runs it with the CI sizes (or short ones from MINER_LOAD_SECONDS / MINER_LOAD_BURST).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

from api.probe import wait_until_ready

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Phase:
    """What one phase (steady clients, or a burst) got back."""

    name: str
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ok: list[float] = field(default_factory=list)
    latencies_all: list[float] = field(default_factory=list)
    timeouts: int = 0
    missing_retry_after: int = 0

    def record(self, status: int, latency: float, retry_after: str | None) -> None:
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        self.latencies_all.append(latency)
        if status == 200:
            self.latencies_ok.append(latency)
        if status == 503 and not retry_after:
            self.missing_retry_after += 1

    def summary(self) -> dict[str, object]:
        total = sum(self.statuses.values()) + self.timeouts

        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)), 3) if values else None

        return {
            "name": self.name,
            "seconds": round(self.seconds, 2),
            "requests": total,
            "ok_per_s": round(self.statuses.get("200", 0) / self.seconds, 2) if self.seconds else None,
            "statuses": dict(sorted(self.statuses.items())),
            "share_503": round(self.statuses.get("503", 0) / total, 3) if total else None,
            "timeouts": self.timeouts,
            "p50_s": pct(self.latencies_all, 50),
            "p99_s": pct(self.latencies_all, 99),
            "max_s": round(max(self.latencies_all), 3) if self.latencies_all else None,
            "p50_ok_s": pct(self.latencies_ok, 50),
            "p99_ok_s": pct(self.latencies_ok, 99),
            "missing_retry_after": self.missing_retry_after,
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_demo_database(home: Path, size: int) -> str:
    """A text database ``en`` of the first ``size`` demo corpus sentences, in the demo model's space."""
    from miner.database_build import build_text_database
    from miner.demo import demo_model_dir
    from miner.encoders.text import paired_text_encoder

    corpus = demo_model_dir().parent / "en_corpus.txt"
    lines = corpus.read_text(encoding="utf-8").splitlines()[:size]
    small = home / "en_corpus_head.txt"
    home.mkdir(parents=True, exist_ok=True)
    small.write_text("\n".join(lines) + "\n", encoding="utf-8")
    build_text_database(
        "en", [small], encoder=paired_text_encoder(), root=home, factory="Flat", progress=False
    )
    return "en"


def start_server(home: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`miner serve` in its own process (the demo model, every database under ``home``)."""
    full = {**os.environ, "MINER_HOME": str(home), "MINER_LOAD_IN_BACKGROUND": "true", **env}
    full.setdefault("TOKENIZERS_PARALLELISM", "false")
    # stderr to a file, never a pipe: nobody reads a pipe during the run, and once ~64 KB of the server's
    # warnings (one per 503) filled it, the server's event loop blocked on the write and every client timed out
    log = open(home / "serve.log", "wb")  # noqa: SIM115 (the server process owns it until it exits)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "miner",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],  # fmt: skip
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()  # the child holds its own descriptor
    return proc


class RssSampler:
    """Peak resident memory of a process, sampled from /proc every ``every`` seconds in a thread."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every, self.peak_mb, self.start_mb = pid, every, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.rss_mb())
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self.start_mb = self.rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def demo_requests() -> tuple[list[bytes], list[str]]:
    from miner.demo import demo_model_dir

    assets = demo_model_dir().parent
    clips = [p.read_bytes() for p in sorted((assets / "clips").glob("*.flac"))]
    sentences = (assets / "en_corpus.txt").read_text(encoding="utf-8").splitlines()[:200]
    return clips, sentences


async def _one(
    client: httpx.AsyncClient, i: int, clips: list[bytes], sentences: list[str], phase: Phase
) -> None:
    start = time.perf_counter()
    try:
        if i % 4 == 3:
            r = await client.post(
                "/search/text-to-text", json={"text": sentences[i % len(sentences)], "db": "en", "k": 5}
            )
        else:
            r = await client.post(
                "/search/speech-to-text",
                files={"audio": ("q.flac", clips[i % len(clips)], "audio/flac")},
                data={"text_db": "en", "k": "5"},
            )
    except httpx.TimeoutException:
        phase.timeouts += 1
        return
    phase.record(r.status_code, time.perf_counter() - start, r.headers.get("retry-after"))


async def steady(url: str, clients: int, seconds: float, client_timeout: float) -> Phase:
    """``clients`` clients, each sending its next request when the last one is answered, for ``seconds``."""
    clips, sentences = demo_requests()
    phase = Phase("steady")
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=client_timeout, limits=limits) as client:
        stop = time.perf_counter() + seconds
        start = time.perf_counter()

        async def loop(c: int) -> None:
            i = c
            while time.perf_counter() < stop:
                await _one(client, i, clips, sentences, phase)
                i += clients

        await asyncio.gather(*(loop(c) for c in range(clients)))
        phase.seconds = time.perf_counter() - start
    return phase


async def burst(url: str, n: int, client_timeout: float) -> Phase:
    """``n`` requests sent at once, each on its own connection."""
    clips, sentences = demo_requests()
    phase = Phase("burst")
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=client_timeout, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(_one(client, i, clips, sentences, phase) for i in range(n)))
        phase.seconds = time.perf_counter() - start
    return phase


def run(
    *,
    clients: int = 32,
    seconds: float = 60.0,
    burst_size: int = 200,
    db_size: int = 1000,
    max_queue_wait_s: float = 5.0,
    request_timeout_s: float = 20.0,
    home: Path | None = None,
) -> dict[str, object]:
    """Build the database, start the server, run both phases, stop it; returns the report."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="miner-load-") as tmp:
        root = Path(home) if home is not None else Path(tmp) / "home"
        build_demo_database(root, db_size)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            "MINER_MAX_QUEUE_WAIT_S": str(max_queue_wait_s),
            "MINER_REQUEST_TIMEOUT_S": str(request_timeout_s),
        }
        proc = start_server(root, port, env)
        try:
            wait_until_ready(url, proc, log=root / "serve.log")
            client_timeout = request_timeout_s + 15.0
            with RssSampler(proc.pid) as rss:
                first = asyncio.run(steady(url, clients, seconds, client_timeout))
                second = asyncio.run(burst(url, burst_size, client_timeout))
                after = rss.rss_mb()
            alive = proc.poll() is None
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "settings": {
            "clients": clients,
            "seconds": seconds,
            "burst": burst_size,
            "db_size": db_size,
            "max_queue_wait_s": max_queue_wait_s,
            "request_timeout_s": request_timeout_s,
        },
        "phases": [first.summary(), second.summary()],
        "rss_mb": {"ready": round(rss.start_mb, 1), "peak": round(rss.peak_mb, 1), "after": round(after, 1)},
        "server_alive": alive,
        "_raw": [asdict(first), asdict(second)],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--db-size", type=int, default=1000, help="demo corpus sentences in the database")
    p.add_argument("--max-queue-wait", type=float, default=5.0, help="server's max_queue_wait_s")
    p.add_argument("--request-timeout", type=float, default=20.0, help="server's request_timeout_s")
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    report = run(
        clients=args.clients,
        seconds=args.seconds,
        burst_size=args.burst,
        db_size=args.db_size,
        max_queue_wait_s=args.max_queue_wait,
        request_timeout_s=args.request_timeout,
    )
    report.pop("_raw")
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
