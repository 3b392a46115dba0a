"""Every bad input gets its 4xx in the one JSON error shape; nothing a client sends produces a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

try:
    from tests._api_fixtures import ApiEnv, api_env, assert_error, clip, settings_for, wait_ready, wav_bytes  # noqa: F401
except ImportError:  # tests/ on sys.path instead of the repository root
    from _api_fixtures import ApiEnv, api_env, assert_error, clip, settings_for, wait_ready, wav_bytes  # noqa: F401

from api.main import create_app

KEY = "s3cret-key"
LIMIT = 200_000  # bytes: a 2.5 s PCM_16 clip is 80 kB


@pytest.fixture(scope="module")
def app(api_env: ApiEnv):
    return create_app(
        settings_for(
            api_env, max_upload_bytes=LIMIT, max_audio_seconds=2.5, max_k=20, api_keys=[KEY, "other-key"]
        )
    )


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:
    with TestClient(app, headers={"X-API-Key": KEY}, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def _speech(client: TestClient, content: bytes, **data: str) -> httpx.Response:
    form = {"text_db": "en", "k": "3", **data}
    return client.post("/search/speech-to-text", files={"audio": ("q.wav", content)}, data=form)


# -- audio -------------------------------------------------------------------------------------------------
def test_not_audio_is_415(client: TestClient) -> None:
    err = assert_error(
        _speech(client, b"this is plain text, not a recording" * 10), 415, "unsupported_media_type"
    )
    assert "ffmpeg" in err["message"]
    rng = np.random.default_rng(0)
    assert_error(
        _speech(client, rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()), 415, "unsupported_media_type"
    )


def test_empty_upload_is_422(client: TestClient) -> None:
    err = assert_error(_speech(client, b""), 422, "invalid_audio")
    assert "empty" in err["message"]


def test_header_only_and_nan_audio_are_422(client: TestClient) -> None:
    header_only = wav_bytes(np.zeros(160, dtype=np.float32))[:44]  # RIFF header, no sample data
    assert_error(_speech(client, header_only), 422, "invalid_audio")
    samples = clip(np.random.default_rng(1), 0.5)
    samples[100] = np.nan
    err = assert_error(_speech(client, wav_bytes(samples, subtype="FLOAT")), 422, "invalid_audio")
    assert "NaN" in err["message"]


def test_audio_over_duration_limit_is_413(client: TestClient) -> None:
    long = wav_bytes(
        clip(np.random.default_rng(2), 3.0), rate=8000
    )  # 3 s at 8 kHz: 48 kB, under the byte limit
    err = assert_error(_speech(client, long), 413, "audio_too_long")
    assert "2.5" in err["message"]


def test_upload_over_byte_limit_is_413_from_content_length(client: TestClient) -> None:
    big = wav_bytes(clip(np.random.default_rng(3), 2.0), subtype="FLOAT") * 2  # 256 kB > 200 kB
    err = assert_error(_speech(client, big), 413, "payload_too_large")
    assert str(LIMIT) in err["message"]


def test_streamed_upload_is_cut_off_at_the_limit(api_env: ApiEnv) -> None:
    """No Content-Length (chunked): the body is counted as it streams, and reading stops past the limit."""
    app = create_app(settings_for(api_env, max_upload_bytes=LIMIT))
    chunks_read = 0

    async def body():
        nonlocal chunks_read
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="text_db"\r\n\r\nen\r\n'
        yield boundary + b'Content-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
        for _ in range(100):  # 100 x 64 kB = 6.4 MB offered
            chunks_read += 1
            yield b"\0" * 65536
        yield b"\r\n--xyz--\r\n"

    async def main() -> httpx.Response:
        async with app.router.lifespan_context(app):
            await app.state.service.wait_loaded(60)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.post(
                    "/search/speech-to-text",
                    content=body(),
                    headers={"Content-Type": "multipart/form-data; boundary=xyz"},
                )

    import asyncio

    response = asyncio.run(main())
    assert_error(response, 413, "payload_too_large")
    assert chunks_read < 10, f"{chunks_read} chunks read: the body was not cut off at the limit"


# -- queries -----------------------------------------------------------------------------------------------
def test_unknown_database_is_404_and_wrong_kind_422(client: TestClient, api_env: ApiEnv) -> None:
    err = assert_error(_speech(client, api_env.clips[0], text_db="nope"), 404, "unknown_database")
    assert "'nope'" in err["message"] and "en (text)" in err["message"]
    assert_error(
        client.post("/search/text-to-text", json={"text": "x", "db": "alien", "k": 2}),
        404,
        "unknown_database",
    )
    assert_error(_speech(client, api_env.clips[0], text_db="clips"), 422, "wrong_database_kind")
    r = client.post(
        "/search/speech-to-speech", files={"audio": ("q.wav", api_env.clips[0])}, data={"speech_db": "en"}
    )
    assert_error(r, 422, "wrong_database_kind")


@pytest.mark.parametrize(
    ("k", "code"),
    [("0", "invalid_query"), ("-3", "invalid_query"), ("21", "invalid_query"), ("many", "validation_error")],
)
def test_k_out_of_range_is_422(client: TestClient, api_env: ApiEnv, k: str, code: str) -> None:
    assert_error(_speech(client, api_env.clips[0], k=k), 422, code)


def test_json_validation_errors_are_422_in_the_error_shape(client: TestClient) -> None:
    err = assert_error(
        client.post("/search/text-to-text", json={"text": "x", "db": "en", "k": 500}), 422, "invalid_query"
    )
    assert "max_k" in err["message"]
    assert_error(client.post("/search/text-to-text", json={"db": "en"}), 422, "validation_error")
    assert_error(client.post("/search/text-to-text", json={"text": "", "db": "en"}), 422, "validation_error")
    assert_error(
        client.post("/search/text-to-text", json={"text": "x", "db": "en", "color": 1}),
        422,
        "validation_error",
    )
    assert_error(
        client.post(
            "/search/text-to-text", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
        422,
        "validation_error",
    )
    assert_error(client.post("/embed/text", json={"texts": []}), 422, "validation_error")
    assert_error(client.post("/embed/text", json={"texts": ["a"] * 200}), 422, "invalid_query")


def test_missing_multipart_fields_are_422(client: TestClient, api_env: ApiEnv) -> None:
    assert_error(client.post("/search/speech-to-text", data={"text_db": "en"}), 422, "validation_error")
    r = client.post("/search/speech-to-text", files={"audio": ("q.wav", api_env.clips[0])})
    err = assert_error(r, 422, "validation_error")
    assert "text_db" in err["message"]
    assert_error(client.post("/search/speech-to-text", json={"text_db": "en"}), 422, "validation_error")


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/search/nothing-here"), 404, "not_found")
    assert_error(client.get("/search/speech-to-text"), 405, "method_not_allowed")


# -- authentication ----------------------------------------------------------------------------------------
def test_api_keys(client: TestClient) -> None:
    query = {"text": "the dog", "db": "en", "k": 2}
    del client.headers["X-API-Key"]  # this test sends its own headers (or none)
    try:
        anonymous = client
        err = assert_error(anonymous.post("/search/text-to-text", json=query), 401, "unauthorized")
        assert "X-API-Key" in err["message"]
        r = anonymous.post("/search/text-to-text", json=query, headers={"X-API-Key": "wrong"})
        assert_error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(
            anonymous.get("/indexes", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized"
        )
        assert_error(
            anonymous.get("/indexes", headers={"Authorization": "Basic " + KEY}), 401, "unauthorized"
        )
        assert_error(anonymous.post("/embed/text", json={"texts": ["a"]}), 401, "unauthorized")
        ok = anonymous.post("/search/text-to-text", json=query, headers={"Authorization": "Bearer other-key"})
        assert ok.status_code == 200, ok.text
        assert anonymous.get("/indexes", headers={"X-API-Key": KEY}).status_code == 200
        # health and metrics stay open for probes and scrapers
        assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/readyz").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
    finally:
        client.headers["X-API-Key"] = KEY


# -- server-side failures ----------------------------------------------------------------------------------
def test_overload_is_503_with_retry_after(app, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.batching import QueueFull

    def full(item, cost=1.0):
        raise QueueFull("text", 256)

    monkeypatch.setattr(app.state.service.services.text_batcher, "enqueue", full)
    r = client.post("/search/text-to-text", json={"text": "x", "db": "en", "k": 2})
    assert_error(r, 503, "overloaded")
    assert int(r.headers["Retry-After"]) >= 1


def test_a_real_bug_is_a_clean_500(
    app, client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = app.state.service.services.databases["en"]

    def broken(queries, k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(db, "search", broken)
    r = client.post("/search/text-to-text", json={"text": "x", "db": "en", "k": 2})
    err = assert_error(r, 500, "internal_error")
    assert "simulated" not in err["message"]  # internals stay in the log
    assert any("simulated bug" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)
