"""Admission by cost (issue 18, findings 6-8): expected wait over the limit is refused at once, work of callers
that left or ran out of time is dropped, slow request heads are cut off, connections are limited."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

try:
    from tests._api_fixtures import ApiEnv, api_env, assert_error, settings_for, wait_ready, wait_until  # noqa: F401
except ImportError:  # tests/ on sys.path instead of the repository root
    from _api_fixtures import ApiEnv, api_env, assert_error, settings_for, wait_ready, wait_until  # noqa: F401

from api.admission import DeadlineExceeded, encode_items
from api.batching import MicroBatcher, QueueFull
from api.main import create_app
from api.server import uvicorn_options


def _slow_rows(seconds_per_unit: float):
    """Fake encoder: each item is a cost in units; the pass sleeps for their sum (a rate of 1/seconds_per_unit)."""
    calls: list[list[float]] = []

    def encode(items: list[float]) -> np.ndarray:
        calls.append(list(items))
        time.sleep(sum(items) * seconds_per_unit)
        return np.stack([np.asarray(items, np.float32)] * 2, axis=1)

    return encode, calls


# -- the batcher ------------------------------------------------------------------------------------------
def test_expected_wait_over_the_limit_is_refused_at_once() -> None:
    encode, calls = _slow_rows(0.01)  # 100 units per second

    async def main() -> tuple[float, QueueFull, MicroBatcher]:
        b = MicroBatcher("t", encode, batch_size=4, max_wait_ms=0, max_queue_wait_s=0.5)
        b.start()
        try:
            await b.submit(10.0, cost=10.0)  # measures the rate: ~100 units/s
            assert b.rate is not None and 50 < b.rate < 150
            waiting = [asyncio.ensure_future(b.submit(20.0, cost=20.0)) for _ in range(2)]  # 0.4 s of work
            await asyncio.sleep(0)
            start = time.perf_counter()
            with pytest.raises(QueueFull) as info:
                await b.submit(30.0, cost=30.0)  # 0.3 s more: over 0.5 s
            took = time.perf_counter() - start
            await asyncio.gather(*waiting)
            return took, info.value, b
        finally:
            await b.aclose()

    took, exc, b = asyncio.run(main())
    assert took < 0.05  # refused without waiting
    assert "would wait about" in str(exc) and exc.retry_after >= 1.0
    assert b.refused == 1 and [30.0] not in calls


def test_deadline_drops_queued_items() -> None:
    encode, calls = _slow_rows(0.1)

    async def main() -> MicroBatcher:
        b = MicroBatcher("t", encode, batch_size=1, max_wait_ms=0)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(3.0, cost=3.0))  # 0.3 s pass
            await asyncio.sleep(0.01)
            with pytest.raises(DeadlineExceeded):
                await encode_items(b, [1.0, 2.0], [1.0, 2.0], timeout=0.1)
            await first
            await asyncio.sleep(0.05)
            return b
        finally:
            await b.aclose()

    b = asyncio.run(main())
    assert calls == [[3.0]] and b.dropped == 2  # the timed-out items never reached the encoder


def test_admission_checks_the_whole_request() -> None:
    encode, _ = _slow_rows(0.001)

    async def main() -> MicroBatcher:
        b = MicroBatcher("t", encode, batch_size=8, max_wait_ms=0, max_queue_wait_s=1.0, initial_rate=10.0)
        b.start()
        try:
            with pytest.raises(QueueFull):
                await encode_items(b, [1.0] * 4, [4.0] * 4, timeout=5)  # 16 units at 10/s: 1.6 s
            assert b.depth == 0 and b.queued_cost == 0.0  # nothing of the refused request stays queued
            return b
        finally:
            await b.aclose()

    asyncio.run(main())


# -- the HTTP edge -----------------------------------------------------------------------------------------
@pytest.fixture()
def app(api_env: ApiEnv):
    return create_app(settings_for(api_env, max_queue_wait_s=0.5, request_timeout_s=20.0))


def test_saturated_encoder_is_503_with_retry_after_at_once(app, api_env: ApiEnv) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        batcher = app.state.service.services.speech_batcher
        batcher.rate = 1.0  # one audio second per second: a 1 s clip waits > 0.5 s
        start = time.perf_counter()
        r = c.post(
            "/search/speech-to-text", files={"audio": ("q.wav", api_env.clips[0])}, data={"text_db": "en"}
        )
        assert time.perf_counter() - start < 5
        assert_error(r, 503, "overloaded")
        assert int(r.headers["Retry-After"]) >= 1 and "max_queue_wait_s" in r.json()["error"]["message"]
        batcher.rate = 1000.0
        r = c.post(
            "/search/speech-to-text", files={"audio": ("q.wav", api_env.clips[0])}, data={"text_db": "en"}
        )
        assert r.status_code == 200, r.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def served(api_env: ApiEnv) -> Iterator[tuple[str, object]]:
    """A real uvicorn server with miner serve's options (header timeout 0.5 s, 4 connections)."""
    import uvicorn

    settings = settings_for(
        api_env, header_timeout_s=0.5, body_timeout_s=1.0, max_connections=4, request_timeout_s=20.0
    )
    app = create_app(settings)
    port = _free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="critical", lifespan="on", **uvicorn_options(settings)
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="uvicorn-admission", daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: srv.started, timeout=30)
        yield f"http://127.0.0.1:{port}", app
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def test_half_sent_headers_are_cut_off(served) -> None:
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        start = time.monotonic()
        assert s.recv(100) == b""  # closed by the server
        assert time.monotonic() - start < 3
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/healthz").status_code == 200  # whole requests are unaffected


def test_a_body_that_stops_coming_is_cut_off(served) -> None:
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"POST /embed/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"texts": ['
        )
        start = time.monotonic()
        while s.recv(4096):  # whatever the app answers to a body cut short, the server closes the connection
            pass
        assert 0.5 < time.monotonic() - start < 4
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        # a complete request is answered, and the connection serves the next one (within the head timeout)
        assert _healthz_on(s).startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        assert _healthz_on(s).startswith(b"HTTP/1.1 200")


def _healthz_on(s: socket.socket) -> bytes:
    """GET /healthz on an open socket; the whole answer."""
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while b'"ok"}' not in answer:
        chunk = s.recv(4096)
        assert chunk, answer
        answer += chunk
    return answer


def test_connections_are_limited(served) -> None:
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        # past max_connections: a new connection is refused at once, as soon as the server has taken the idle
        # ones (a fresh connection per try; a loaded machine may take a moment to accept them)
        assert wait_until(lambda: httpx.get(f"{url}/healthz", timeout=10).status_code == 503, timeout=10)
    finally:
        for s in idle:
            s.close()
    with httpx.Client(base_url=url, timeout=10) as c:
        assert wait_until(lambda: c.get("/healthz").status_code == 200, timeout=5)


def test_work_of_a_client_that_left_is_dropped(served, api_env: ApiEnv) -> None:
    url, app = served
    with httpx.Client(base_url=url, timeout=30) as c:
        wait_ready(c)
    services = app.state.service.services
    speech = services.models.speech
    real = speech.encode
    calls: list[int] = []

    def slow(wavs, batch_size=16):
        calls.append(len(wavs))
        time.sleep(1.0)
        return real(wavs, batch_size=batch_size)

    speech.encode = slow
    try:
        form = {"text_db": "en"}
        files = {"audio": ("q.wav", api_env.clips[0])}
        first = threading.Thread(
            target=lambda: httpx.post(url + "/search/speech-to-text", files=files, data=form, timeout=30)
        )
        first.start()
        assert wait_until(lambda: len(calls) == 1, timeout=10)  # the encoder is busy for 1 s
        with pytest.raises(httpx.ReadTimeout):  # this client gives up while its clip waits
            httpx.post(url + "/search/speech-to-text", files=files, data=form, timeout=0.3)
        first.join(timeout=30)
        assert wait_until(lambda: services.speech_batcher.dropped >= 1, timeout=10)
        time.sleep(0.3)
        assert calls == [1]  # the clip of the client that left never reached the encoder
    finally:
        speech.encode = real
