"""Search service endpoints against a tiny model and tiny databases: results equal the library search."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

try:
    from tests._api_fixtures import SENTENCES, ApiEnv, api_env, await_ready, run, settings_for, wait_ready  # noqa: F401
except ImportError:  # tests/ on sys.path instead of the repository root
    from _api_fixtures import SENTENCES, ApiEnv, api_env, await_ready, run, settings_for, wait_ready  # noqa: F401

from api.main import create_app
from index.margins import load_reference_margins
from index.sharded import ShardedIndex
from miner.audio import load_audio


@pytest.fixture(scope="module")
def client(api_env: ApiEnv) -> Iterator[TestClient]:
    app = create_app(settings_for(api_env))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def _library_search(env: ApiEnv, db: str, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = ShardedIndex.load(env.home / db)
    scores, ids = index.search(vector[None, :].astype(np.float32), k)
    return scores[0], ids[0]


def test_indexes_lists_served_databases_and_skips_other_spaces(client: TestClient, api_env: ApiEnv) -> None:
    r = client.get("/indexes")
    assert r.status_code == 200
    by_name = {d["name"]: d for d in r.json()}
    assert set(by_name) == {"en", "clips"}  # "alien" is in another space: skipped
    assert by_name["en"] == {
        "name": "en",
        "kind": "text",
        "size": 14,
        "dim": 16,
        "space_id": api_env.space_id,
        "margins": True,
    }
    assert by_name["clips"]["kind"] == "speech" and by_name["clips"]["size"] == 8
    assert by_name["clips"]["margins"] is False


def test_speech_to_text_equals_library_search_with_margins(client: TestClient, api_env: ApiEnv) -> None:
    upload = api_env.clips[1]
    r = client.post(
        "/search/speech-to-text",
        files={"audio": ("q.wav", upload, "audio/wav")},
        data={"text_db": "en", "k": "5"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["took_ms"] >= 0 and len(body["results"]) == 5
    query = api_env.speech.encode([load_audio(upload)])[0]
    scores, ids = _library_search(api_env, "en", query, 5)
    assert [h["id"] for h in body["results"]] == ids.tolist()
    np.testing.assert_allclose([h["cosine"] for h in body["results"]], scores, atol=1e-5)
    assert [h["rank"] for h in body["results"]] == [1, 2, 3, 4, 5]
    texts = [h["text"] for h in body["results"]]
    from index.store import Store

    with Store.open(api_env.home / "en" / "store.sqlite") as store:
        rows = store.get_many(ids.tolist())
    assert texts == [row["text"] for row in rows]
    assert [h["ext_id"] for h in body["results"]] == [row["ext_id"] for row in rows]
    assert [h["lang"] for h in body["results"]] == [row["lang"] for row in rows]
    # margin = cos / ((r_x + r_y) / 2), r_x = mean of the query's own top-3 cosines (the k of margin_ry)
    margins = load_reference_margins(api_env.home / "en", 14)
    assert margins is not None and margins.k == 3
    top3, _ = _library_search(api_env, "en", query, 3)
    expected = scores / ((top3.mean() + margins.ry[ids]) / 2)
    np.testing.assert_allclose([h["margin"] for h in body["results"]], expected, rtol=1e-4)
    # a k below the margin's own k (3) still uses the query's top-3 for r_x
    r2 = client.post(
        "/search/speech-to-text", files={"audio": ("q.wav", upload)}, data={"text_db": "en", "k": "2"}
    )
    assert [h["id"] for h in r2.json()["results"]] == ids[:2].tolist()
    np.testing.assert_allclose([h["margin"] for h in r2.json()["results"]], expected[:2], rtol=1e-4)


def test_speech_to_speech_finds_the_clip_itself(client: TestClient, api_env: ApiEnv) -> None:
    r = client.post(
        "/search/speech-to-speech",
        files={"audio": ("q.wav", api_env.clips[3])},
        data={"speech_db": "clips", "k": "3"},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    query = api_env.speech.encode([load_audio(api_env.clips[3])])[0]
    scores, ids = _library_search(api_env, "clips", query, 3)
    assert [h["id"] for h in results] == ids.tolist() and ids[0] == 3
    np.testing.assert_allclose([h["cosine"] for h in results], scores, atol=1e-5)
    top = results[0]
    row = api_env.speech_rows[3]
    assert top["path"] == row["path"] and top["start"] == row["start"] and top["ext_id"] == "u3"
    assert top["duration"] == pytest.approx(row["duration"]) and top["margin"] is None  # no margin_ry.npy


@pytest.mark.parametrize(("route", "db"), [("text-to-text", "en"), ("text-to-speech", "clips")])
def test_text_queries_equal_library_search(client: TestClient, api_env: ApiEnv, route: str, db: str) -> None:
    r = client.post(f"/search/{route}", json={"text": "le chat dort", "db": db, "k": 4})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    query = api_env.text.encode(["le chat dort"])[0]
    scores, ids = _library_search(api_env, db, query, 4)
    assert [h["id"] for h in results] == ids.tolist()
    np.testing.assert_allclose([h["cosine"] for h in results], scores, atol=1e-5)
    assert len(set(np.round(scores, 5))) == 4  # distinct cosines: the order is meaningful
    if db == "en":
        assert [h["text"] for h in results] == [SENTENCES[i] for i in ids]
    else:
        assert [h["path"] for h in results] == [api_env.speech_rows[i]["path"] for i in ids]


def test_k_larger_than_database_returns_all_items(client: TestClient) -> None:
    r = client.post("/search/text-to-speech", json={"text": "the dog", "db": "clips", "k": 50})
    assert r.status_code == 200 and len(r.json()["results"]) == 8


def test_embed_endpoints_match_the_encoders(client: TestClient, api_env: ApiEnv) -> None:
    r = client.post("/embed/text", json={"texts": ["the dog runs", "le chat"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dim"] == 16 and body["space_id"] == api_env.space_id
    np.testing.assert_allclose(body["vectors"], api_env.text.encode(["the dog runs", "le chat"]), atol=1e-5)
    files = [("audio", ("a.wav", api_env.clips[0])), ("audio", ("b.wav", api_env.clips[2]))]
    r = client.post("/embed/speech", files=files)
    assert r.status_code == 200, r.text
    expected = api_env.speech.encode([load_audio(api_env.clips[0]), load_audio(api_env.clips[2])])
    vectors = np.array(r.json()["vectors"])
    assert vectors.shape == (2, 16)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/search/text-to-text", json={"text": "the dog", "db": "en", "k": 2})
    text = client.get("/metrics").text
    assert 'miner_http_requests_total{method="POST",route="/search/text-to-text",status="200"}' in text
    assert 'miner_batch_size_count{encoder="text"}' in text
    assert 'miner_queue_depth{encoder="speech"} 0.0' in text
    assert "miner_model_seconds_bucket" in text and "miner_ready 1.0" in text
    assert 'miner_search_seconds_count{database="en"}' in text


def test_concurrent_requests_share_forward_passes(api_env: ApiEnv) -> None:
    """32 concurrent speech-to-text requests: every answer right, fewer forward passes than requests."""
    app = create_app(settings_for(api_env, batch_size=16, batch_wait_ms=50.0))
    queries = [load_audio(c) for c in api_env.clips]
    expected = [_library_search(api_env, "en", v, 3)[1].tolist() for v in api_env.speech.encode(queries)]

    async def main() -> tuple[list[httpx.Response], int, int]:
        async with app.router.lifespan_context(app):
            await await_ready(app)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
                responses = await asyncio.gather(
                    *(
                        c.post(
                            "/search/speech-to-text",
                            files={"audio": ("q.wav", api_env.clips[i % 8])},
                            data={"text_db": "en", "k": "3"},
                        )
                        for i in range(32)
                    )
                )
            batcher = app.state.service.services.speech_batcher
            return list(responses), batcher.forward_passes, batcher.items_encoded

    import asyncio

    responses, passes, items = run(main())
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == expected[i % 8]
    assert items == 32
    assert passes < 32, f"{passes} forward passes for 32 requests: no batching"


def test_discovery_logs_skipped_database(api_env: ApiEnv, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="api"):
        app = create_app(settings_for(api_env, load_in_background=False))
        with TestClient(app) as c:
            assert {d["name"] for d in c.get("/indexes").json()} == {"en", "clips"}
    assert any("skipping database alien" in rec.getMessage() for rec in caplog.records)


def test_lone_request_is_not_held_by_the_batch_wait(api_env: ApiEnv) -> None:
    """One request at a time: each is encoded at once, alone, however long batch_wait_ms is."""
    app = create_app(settings_for(api_env, batch_wait_ms=5000.0))

    async def main() -> tuple[list[float], dict[int, int]]:
        async with app.router.lifespan_context(app):
            await await_ready(app)
            transport = httpx.ASGITransport(app=app)
            took = []
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
                for i in range(3):
                    start = time.perf_counter()
                    r = await c.post(
                        "/search/speech-to-text",
                        files={"audio": ("q.wav", api_env.clips[i])},
                        data={"text_db": "en", "k": "3"},
                    )
                    took.append(time.perf_counter() - start)
                    assert r.status_code == 200, r.text
            return took, dict(app.state.service.services.speech_batcher.batch_sizes)

    took, sizes = run(main())
    assert sizes == {1: 3}
    assert max(took) < 2.5, f"lone requests took {took} s: they waited for the 5 s batch window"


def test_dependencies_do_not_run_in_the_thread_pool(
    client: TestClient, api_env: ApiEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI runs a plain ``def`` dependency in its thread pool: a thread hand-off per dependency per request."""
    import fastapi.dependencies.utils

    import api.deps

    for name in ("get_settings", "get_state", "get_metrics", "get_services", "require_api_key"):
        assert inspect.iscoroutinefunction(getattr(api.deps, name)), f"api.deps.{name} must be async"
    calls: list[str] = []
    original = fastapi.dependencies.utils.run_in_threadpool

    async def recording(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(func, "__qualname__", repr(func)))
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(fastapi.dependencies.utils, "run_in_threadpool", recording)
    r = client.post(
        "/search/speech-to-text",
        files={"audio": ("q.wav", api_env.clips[0])},
        data={"text_db": "en", "k": "2"},
    )
    assert r.status_code == 200, r.text
    assert calls == [], f"dependencies run in the thread pool: {calls}"
