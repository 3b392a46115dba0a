"""Regression tests of issue 18's findings against the HTTP edge: no 500 from hostile input, bounded work per
request, clean 500s, auth and configuration edge cases."""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

try:
    from tests._api_fixtures import (  # noqa: F401,E501
        ApiEnv,
        api_env,
        assert_error,
        clip,
        settings_for,
        wait_ready,
        wait_until,
        wav_bytes,
    )
except ImportError:  # tests/ on sys.path instead of the repository root
    from _api_fixtures import (  # noqa: F401,E501
        ApiEnv,
        api_env,
        assert_error,
        clip,
        settings_for,
        wait_ready,
        wait_until,
        wav_bytes,
    )

import api.audio_input
from api.main import create_app

KEY = "hardening-key"


@pytest.fixture(scope="module")
def app(api_env: ApiEnv):
    return create_app(
        settings_for(
            api_env,
            max_audio_seconds=2.5,
            max_request_audio_seconds=3.0,
            max_request_tokens=60,
            api_keys=[KEY],
            metrics_database_names=False,
        )
    )


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:
    with TestClient(app, headers={"X-API-Key": KEY}, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def _speech(client: TestClient, content: bytes, name: str = "q.wav") -> httpx.Response:
    return client.post(
        "/search/speech-to-text", files={"audio": (name, content)}, data={"text_db": "en", "k": "3"}
    )


def _wav_with_rate(rate: int, n: int = 1000) -> bytes:
    """A 16 kHz PCM_16 WAV whose header then claims ``rate`` Hz (libsndfile writes no such rate itself)."""
    data = bytearray(wav_bytes(np.zeros(n, np.float32)))
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", min(rate * 2, 2**32 - 1))
    return bytes(data)


# -- 1, 2: tiny clips, absurd sample rates ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("samples", "rate"),
    [(1, 16000), (200, 16000), (399, 16000), (100, 8000)],
    ids=["1", "200", "399", "100@8k"],
)
def test_tiny_clip_is_422_naming_the_minimum(client: TestClient, samples: int, rate: int) -> None:
    content = wav_bytes(np.full(samples, 0.1, np.float32), rate=rate)
    err = assert_error(_speech(client, content), 422, "invalid_audio")
    assert "too short" in err["message"] and "400 samples" in err["message"], err


def test_shortest_accepted_clip_is_embedded(client: TestClient) -> None:
    assert _speech(client, wav_bytes(clip(np.random.default_rng(0), 0.025))).status_code == 200


def test_one_tiny_file_in_embed_speech_is_a_4xx_naming_it(client: TestClient, api_env: ApiEnv) -> None:
    files = [("audio", ("good.wav", api_env.clips[0])), ("audio", ("one.wav", wav_bytes(np.array([0.1]))))]
    err = assert_error(client.post("/embed/speech", files=files), 422, "invalid_audio")
    assert "one.wav" in err["message"]


@pytest.mark.parametrize("rate", [2147483647, 1, 900_000])
def test_absurd_sample_rate_is_422(client: TestClient, rate: int) -> None:
    err = assert_error(_speech(client, _wav_with_rate(rate)), 422, "invalid_audio")
    assert "sample rate" in err["message"]


# -- 4: decoded size from the header, before decoding -----------------------------------------------------
def test_flac_bomb_is_refused_from_the_header(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((655_350, 8), np.int16), 655_350, format="FLAC")  # 1 s, 8 channels
    assert len(buf.getvalue()) < 100_000  # silence compresses: a small upload, 5.2 M samples decoded

    def never(*args, **kwargs):
        raise AssertionError("decoded although the header already told the size")

    monkeypatch.setattr(api.audio_input, "load_audio", never)
    err = assert_error(_speech(client, buf.getvalue(), "bomb.flac"), 413, "audio_too_long")
    assert "8 channels" in err["message"] and "decoded samples" in err["message"]


def test_decoded_size_bound_is_a_setting(api_env: ApiEnv) -> None:
    stereo = wav_bytes(np.zeros((16000, 2), np.float32))  # 1 s stereo: 32,000 decoded samples
    app = create_app(settings_for(api_env, max_decoded_samples=20_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        assert_error(_speech(c, stereo), 413, "audio_too_long")
        assert _speech(c, wav_bytes(np.zeros(16000, np.float32) + 0.01)).status_code == 200


# -- 5, 9: text tokens and control characters ------------------------------------------------------------
def test_long_text_is_truncated_and_says_so(client: TestClient) -> None:
    long = " ".join(["cat"] * 400)  # the tiny teacher reads 32 tokens
    r = client.post("/search/text-to-text", json={"text": long, "db": "en", "k": 2})
    assert r.status_code == 200 and r.json()["truncated"] is True, r.text
    r = client.post("/search/text-to-text", json={"text": "the cat", "db": "en", "k": 2})
    assert r.status_code == 200 and r.json()["truncated"] is False
    r = client.post("/embed/text", json={"texts": ["the dog", " ".join(["dog"] * 40)]})
    assert r.status_code == 200 and r.json()["truncated"] == [1], r.text


@pytest.mark.parametrize("text", ["\u0000\u0001abc", "cat\u0000", "a\u007fb", "x\u0085"])
def test_control_characters_are_422(client: TestClient, text: str) -> None:
    err = assert_error(
        client.post("/search/text-to-text", json={"text": text, "db": "en", "k": 2}), 422, "invalid_query"
    )
    assert "control character U+" in err["message"]
    err = assert_error(client.post("/embed/text", json={"texts": ["ok", text]}), 422, "invalid_query")
    assert "texts[1]" in err["message"]


def test_lone_surrogate_is_422_not_500(client: TestClient) -> None:
    body = b'{"text": "a\\ud800b", "db": "en", "k": 2}'
    r = client.post("/search/text-to-text", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] in {"invalid_query", "validation_error"}, r.text


def test_tab_and_newline_are_allowed(client: TestClient) -> None:
    r = client.post("/search/text-to-text", json={"text": "the\tcat\nsleeps", "db": "en", "k": 2})
    assert r.status_code == 200, r.text


# -- 6: work per request bounded by cost -----------------------------------------------------------------
def test_embed_speech_is_limited_by_total_seconds(client: TestClient) -> None:
    rng = np.random.default_rng(1)
    files = [("audio", (f"c{i}.wav", wav_bytes(clip(rng, 1.2)))) for i in range(3)]  # 3.6 s > 3 s
    err = assert_error(client.post("/embed/speech", files=files), 413, "request_too_large")
    assert "c2.wav" in err["message"] and "3 s" in err["message"]
    assert client.post("/embed/speech", files=files[:2]).status_code == 200


def test_embed_text_is_limited_by_total_tokens(client: TestClient) -> None:
    texts = [" ".join(["cat"] * 40)] * 3  # each cut to 32 tokens: 96 > 60
    err = assert_error(client.post("/embed/text", json={"texts": texts}), 413, "request_too_large")
    assert "tokens" in err["message"]
    assert client.post("/embed/text", json={"texts": texts[:1]}).status_code == 200


# -- 13: auth, data root, manifest mode, metrics -------------------------------------------------------
def test_empty_x_api_key_beside_a_good_bearer_token_is_accepted(client: TestClient) -> None:
    headers = {"X-API-Key": "", "Authorization": f"Bearer {KEY}"}
    assert client.get("/indexes", headers=headers).status_code == 200
    assert_error(client.get("/indexes", headers={"X-API-Key": "", "Authorization": ""}), 401, "unauthorized")


def test_missing_data_root_refuses_to_start(api_env: ApiEnv, tmp_path: Path) -> None:
    app = create_app(settings_for(api_env, home=tmp_path / "no-such-folder"))
    with (
        pytest.raises(FileNotFoundError, match="no-such-folder.*does not exist.*MINER_HOME"),
        TestClient(app),
    ):
        pass


def test_manifest_is_world_readable_like_the_rest(tmp_path: Path) -> None:
    from index.build import build_index

    old = os.umask(0o022)
    try:
        build_index(tmp_path / "db", np.eye(4, dtype=np.float32), [{"text": str(i)} for i in range(4)],
                    space_id="s-4")  # fmt: skip
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "db").iterdir()}
    assert modes["manifest.json"] == 0o644, modes


def test_metrics_database_names_and_key_are_settings(client: TestClient, api_env: ApiEnv) -> None:
    client.post("/search/text-to-text", json={"text": "the cat", "db": "en", "k": 2})
    text = client.get("/metrics").text
    assert 'miner_search_seconds_count{database="*"}' in text and 'database="en"' not in text
    app = create_app(settings_for(api_env, api_keys=[KEY], metrics_require_key=True))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.get("/metrics"), 401, "unauthorized")
        assert c.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200


# -- 3: a 500 closes the connection cleanly ---------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_500_says_connection_close_and_the_next_request_works(
    api_env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    port = _free_port()
    app = create_app(settings_for(api_env))
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on")
    )
    thread = threading.Thread(target=srv.run, name="uvicorn-500", daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: srv.started, timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            wait_ready(c)
            db = app.state.service.services.databases["en"]

            def broken(queries, k):
                raise RuntimeError("simulated bug")

            monkeypatch.setattr(db, "search", broken)
            r = c.post("/search/text-to-text", json={"text": "the cat", "db": "en", "k": 2})
            assert r.status_code == 500 and r.headers.get("connection") == "close", r.headers
            monkeypatch.undo()
            for _ in range(3):  # the client opens a new connection instead of reusing the dropped one
                assert (
                    c.post("/search/text-to-text", json={"text": "the cat", "db": "en", "k": 2}).status_code
                    == 200
                )
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
