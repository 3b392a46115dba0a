"""The service as deployed: a real uvicorn server on 127.0.0.1, readiness while loading, refusal to start."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

try:
    from tests._api_fixtures import ApiEnv, api_env, assert_error, settings_for, wait_ready, wait_until  # noqa: F401
except ImportError:  # tests/ on sys.path instead of the repository root
    from _api_fixtures import ApiEnv, api_env, assert_error, settings_for, wait_ready, wait_until  # noqa: F401

import api.state
from api.main import create_app
from api.settings import Settings
from index.sharded import ShardedIndex
from miner.audio import load_audio
from miner.spaces import SpaceMismatchError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(api_env: ApiEnv) -> Iterator[str]:
    """A uvicorn server in a thread; yields its base URL and stops it (bounded waits)."""
    import uvicorn

    port = _free_port()
    app = create_app(settings_for(api_env, api_keys=["k1"]))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: srv.started, timeout=30), "uvicorn did not start within 30 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not stop within 30 s"


def test_real_server_end_to_end(server: str, api_env: ApiEnv) -> None:
    with httpx.Client(base_url=server, timeout=30, headers={"X-API-Key": "k1"}) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        wait_ready(c)
        r = c.post(
            "/search/speech-to-text",
            files={"audio": ("q.wav", api_env.clips[4], "audio/wav")},
            data={"text_db": "en", "k": "4"},
        )
        assert r.status_code == 200, r.text
        query = api_env.speech.encode([load_audio(api_env.clips[4])])[0]
        scores, ids = ShardedIndex.load(api_env.home / "en").search(query[None, :], 4)
        assert [h["id"] for h in r.json()["results"]] == ids[0].tolist()
        np.testing.assert_allclose([h["cosine"] for h in r.json()["results"]], scores[0], atol=1e-5)
        assert_error(
            c.post(
                "/search/speech-to-text", files={"audio": ("q.wav", b"not audio")}, data={"text_db": "en"}
            ),
            415,
            "unsupported_media_type",
        )
        assert_error(c.get("/indexes", headers={"X-API-Key": "nope"}), 401, "unauthorized")
        big = b"\0" * (21 * 1000 * 1000)  # over the default 20 MB: refused from Content-Length
        assert_error(c.post("/embed/speech", files={"audio": ("big.wav", big)}), 413, "payload_too_large")
        assert 'route="/search/speech-to-text",status="200"' in c.get("/metrics").text


def test_readiness_before_and_after_loading(api_env: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real_load = api.state.load_models

    def slow_load(settings: Settings):
        assert gate.wait(timeout=60), "test gate never opened"
        return real_load(settings)

    monkeypatch.setattr(api.state, "load_models", slow_load)
    app = create_app(settings_for(api_env))
    with TestClient(app) as c:
        try:
            assert c.get("/healthz").status_code == 200  # alive while loading
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["Retry-After"]
            assert_error(c.post("/search/text-to-text", json={"text": "x", "db": "en"}), 503, "not_ready")
            assert_error(c.get("/indexes"), 503, "not_ready")
            assert "miner_ready 0.0" in c.get("/metrics").text
        finally:
            gate.set()
        wait_ready(c)
        ready = c.get("/readyz").json()
        assert {k: ready[k] for k in ("status", "detail")} == {"status": "ready", "detail": None}
        assert ready["speech_model"] == {  # which kind of speech model answers
            "kind": "samu",
            "model_id": api_env.speech.model_id,
            "space_id": api_env.space_id,
            "dim": 16,
            "fusion_weight": None,
            "fusion_gate": None,
        }
        assert c.post("/search/text-to-text", json={"text": "x", "db": "en"}).status_code == 200


def test_failed_background_load_stays_unready(api_env: ApiEnv, tmp_path, caplog) -> None:
    app = create_app(settings_for(api_env, speech_model=str(tmp_path / "no-such-model")))
    with caplog.at_level(logging.ERROR, logger="api"), TestClient(app) as c:
        assert wait_until(lambda: c.get("/readyz").json()["status"] == "failed", timeout=30)
        r = c.get("/readyz")
        assert r.status_code == 503 and "no-such-model" in r.json()["detail"]
        err = assert_error(c.post("/search/text-to-text", json={"text": "x", "db": "en"}), 503, "not_ready")
        assert "loading failed" in err["message"]
    assert any("loading failed" in rec.getMessage() for rec in caplog.records)


def test_space_mismatch_refuses_to_start(api_env: ApiEnv, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(settings_for(api_env, databases=["en", "alien"]))
    with (
        caplog.at_level(logging.ERROR, logger="api"),
        pytest.raises(SpaceMismatchError, match="alien"),
        TestClient(app),
    ):
        pass
    assert any(
        "refusing to start" in rec.getMessage() and "alien" in rec.getMessage() for rec in caplog.records
    )


def test_unknown_named_database_refuses_to_start(api_env: ApiEnv) -> None:
    app = create_app(settings_for(api_env, databases=["missing"]))
    with pytest.raises(FileNotFoundError, match="'missing' not found.*alien, clips, en"), TestClient(app):
        pass


def test_foreground_load_failure_refuses_to_start(api_env: ApiEnv, tmp_path) -> None:
    app = create_app(settings_for(api_env, speech_model=str(tmp_path / "nope"), load_in_background=False))
    with pytest.raises(RuntimeError, match="refusing to start.*nope"), TestClient(app):
        pass


def test_cors_preflight(api_env: ApiEnv) -> None:
    app = create_app(settings_for(api_env, cors_origins=["https://ui.example"]))
    c = TestClient(app)  # no lifespan: CORS answers without models
    r = c.options(
        "/search/text-to-text",
        headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ui.example"
    r = c.options(
        "/search/text-to-text",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MINER_HOME", str(tmp_path))
    monkeypatch.setenv("MINER_API_KEYS", "a, b")
    monkeypatch.setenv("MINER_DATABASES", '["en", "fr"]')
    monkeypatch.setenv("MINER_CORS_ORIGINS", "")
    monkeypatch.setenv("MINER_MAX_K", "7")
    s = Settings()
    assert s.home == tmp_path and s.api_keys == ["a", "b"] and s.databases == ["en", "fr"]
    assert s.cors_origins == [] and s.max_k == 7 and s.max_upload_bytes == 20_000_000
    assert "api_keys" not in repr(s)  # keys stay out of reprs and logs
    monkeypatch.setenv("MINER_DATABASES", "../etc")
    with pytest.raises(ValueError, match="invalid database name"):
        Settings()


def test_serve_command_builds_the_app_from_arguments_and_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import uvicorn

    from miner.commands.serve import serve_command

    seen: dict = {}

    def fake_run(app, **kwargs) -> None:
        seen.update(kwargs, settings=app.state.settings)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setenv("MINER_MAX_K", "9")
    serve_command("0.0.0.0", 9123, home=tmp_path, databases=["en"], batch_size=4)
    s = seen["settings"]
    assert seen["host"] == "0.0.0.0" and seen["port"] == 9123 and seen["workers"] == 1
    assert s.home == tmp_path and s.databases == ["en"] and s.batch_size == 4 and s.max_k == 9
