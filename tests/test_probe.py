"""api.probe.wait_until_ready against a real HTTP server on loopback (a stand-in /readyz) and real processes."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.probe import ServerNotReady, wait_until_ready


class _Readyz(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str]]] = []  # served in turn; the last one repeats

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        code, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def readyz() -> Iterator[tuple[str, type[_Readyz]]]:
    handler = type("Handler", (_Readyz,), {"answers": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_returns_once_ready_after_loading(readyz: tuple[str, type[_Readyz]]) -> None:
    url, handler = readyz
    handler.answers = [(503, {"status": "loading"}), (503, {"status": "loading"}), (200, {"status": "ready"})]
    wait_until_ready(url, timeout=30, every=0.01)
    assert handler.answers == [(200, {"status": "ready"})]  # both loading answers were polled past


def test_failed_load_stops_the_wait_with_its_detail(
    readyz: tuple[str, type[_Readyz]], tmp_path: Path
) -> None:
    url, handler = readyz
    handler.answers = [(503, {"status": "failed", "detail": "speech model /x not found"})]
    log = tmp_path / "serve.log"
    log.write_text("line one\nTraceback: the end of the log\n", encoding="utf-8")
    with pytest.raises(ServerNotReady, match="failed to load: speech model /x not found") as info:
        wait_until_ready(url, timeout=60, log=log, every=0.01)
    assert "the end of the log" in str(info.value)


def test_exited_process_stops_the_wait() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(timeout=30)
    with pytest.raises(ServerNotReady, match="exited with code 3"):
        wait_until_ready("http://127.0.0.1:9", proc, timeout=60)


def test_times_out_when_nothing_listens() -> None:
    import socket

    with socket.socket() as s:  # a port with no listener: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerNotReady, match="not ready after 0 s"):
        wait_until_ready(f"http://127.0.0.1:{port}", timeout=0.2, every=0.05)
