"""The web page's server side without a browser: the page and its files load without a key and from this server
alone, ``/ui/config``, the segment endpoint (registered files only), and text queries against a database built
with another text encoder (its own recorded encoder embeds them; speech queries are refused)."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

try:
    from tests._api_fixtures import ApiEnv, api_env, assert_error, clip, settings_for, wait_ready  # noqa: F401
except ImportError:  # tests/ on sys.path instead of the repository root
    from _api_fixtures import ApiEnv, api_env, assert_error, clip, settings_for, wait_ready  # noqa: F401

from api.main import create_app
from api.routes.web import STATIC_FILES

KEY = "web-key"
STATIC = Path(__file__).resolve().parents[1] / "api" / "static"


@pytest.fixture(scope="module")
def home(api_env: ApiEnv, tmp_path_factory: pytest.TempPathFactory, spread_st_dir: Path) -> Path:
    """A copy of the API test data root plus: ``voices`` (speech; rows registering real WAVs, a text file, a
    folder and a missing file) and ``other`` (text, built with another text encoder than the model's)."""
    from index.build import build_index
    from miner.database_build import build_text_database
    from miner.encoders.text import load_text_encoder

    root = tmp_path_factory.mktemp("web")
    home = root / "home"
    shutil.copytree(api_env.home, home)
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(5)
    for i, seconds in enumerate((2.0, 1.5)):
        sf.write(audio / f"u{i}.wav", clip(rng, seconds), 16000, subtype="PCM_16")
    (audio / "notes.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    rows = [
        {"id": "u0", "path": str(audio / "u0.wav"), "start": 0.5, "duration": 1.0, "lang": "en"},
        {"id": "u1", "path": str(audio / "u1.wav"), "start": 0.0, "duration": 1.5, "lang": "fr"},
        {"id": "txt", "path": str(audio / "notes.txt"), "start": 0.0, "duration": 1.0},
        {"id": "dir", "path": str(audio), "start": 0.0, "duration": 1.0},
        {"id": "gone", "path": str(audio / "gone.wav"), "start": 0.0, "duration": 1.0},
    ]
    vecs = np.random.default_rng(2).standard_normal((len(rows), 16)).astype(np.float32)
    build_index(home / "voices", vecs, rows, space_id=api_env.space_id, kind="speech", factory="Flat")
    corpus = root / "other.txt"
    corpus.write_text("the cat sleeps\nthe dog runs\nle chat dort\nder hund\na house\n", encoding="utf-8")
    other = load_text_encoder(str(spread_st_dir), device="cpu")
    assert other.space_id != api_env.space_id
    build_text_database("other", [corpus], encoder=other, root=home, factory="Flat", progress=False)
    return home


@pytest.fixture(scope="module")
def client(api_env: ApiEnv, home: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(api_env, home=home, api_keys=[KEY]))
    with TestClient(app) as c:
        c.headers["X-API-Key"] = KEY
        wait_ready(c)
        yield c


def test_page_and_files_load_without_a_key_and_only_from_this_server(client: TestClient) -> None:
    anonymous = {"X-API-Key": ""}
    page = client.get("/", headers=anonymous)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = page.text
    assert 'href="/docs"' in html and 'id="file"' in html and 'id="record"' in html
    for name in STATIC_FILES:
        assert f"/static/{name}" in html
        r = client.get(f"/static/{name}", headers=anonymous)
        assert r.status_code == 200 and r.headers["content-type"] == STATIC_FILES[name], name
    assert_error(client.get("/static/../main.py", headers=anonymous), 404, "not_found")
    assert_error(client.get("/static/index.py", headers=anonymous), 404, "not_found")
    # nothing loads from elsewhere: no absolute URL, protocol-relative URL or @import in the page's files
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text), path.name
    assert {p.name for p in STATIC.iterdir()} == {"index.html", *STATIC_FILES}


def test_static_files_are_package_data() -> None:
    import tomllib

    pyproject = tomllib.loads((STATIC.parents[1] / "pyproject.toml").read_text())
    assert "static/*" in pyproject["tool"]["setuptools"]["package-data"]["api"]
    assert any(dep.startswith("selenium") for dep in pyproject["project"]["optional-dependencies"]["dev"])


def test_ui_config_needs_no_key_and_the_api_still_does(client: TestClient) -> None:
    cfg = client.get("/ui/config", headers={"X-API-Key": ""}).json()
    assert cfg == {
        "auth_required": True,
        "key_header": "X-API-Key",
        "max_audio_seconds": 60.0,
        "max_upload_bytes": 20_000_000,
        "max_k": 100,
        "max_text_chars": 5000,
    }
    assert_error(client.get("/indexes", headers={"X-API-Key": ""}), 401, "unauthorized")
    assert_error(client.get("/audio/voices/0", headers={"X-API-Key": "wrong"}), 401, "unauthorized")


def test_segment_is_the_registered_files_cut(client: TestClient, home: Path) -> None:
    from index.store import Store

    with Store.open(home / "voices" / "store.sqlite") as store:
        row = store.get(0)
    r = client.get("/audio/voices/0")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    got, rate = sf.read(io.BytesIO(r.content), dtype="int16")
    full, _ = sf.read(row["path"], dtype="int16")
    assert rate == 16000 and len(got) == 16000  # start 0.5 s, duration 1.0 s
    np.testing.assert_array_equal(got, full[8000:24000])


def test_segment_endpoint_refuses_everything_but_registered_audio(client: TestClient) -> None:
    # a client cannot name a path: path-like database names and ids are not found / not ids
    for path in (
        "/audio/..%2F..%2Fetc/0",
        "/audio/voices/..%2F..%2Fetc%2Fpasswd",
        "/audio/voices/%2Fetc%2Fpasswd",
        "/audio/voices/../../etc/passwd",
        "/audio/etc/passwd",
    ):
        r = client.get(path)
        assert r.status_code in (404, 422) and set(r.json()) == {"error"}, (path, r.text)
        assert "root:" not in r.text
    assert_error(client.get("/audio/voices/passwd"), 422, "validation_error")
    assert_error(client.get("/audio/voices/-1"), 422, "validation_error")
    assert_error(client.get(f"/audio/voices/{2**64}"), 422, "validation_error")  # past SQLite's integers
    # a path in the query string is ignored: item 1's registered file comes back, nothing else
    r = client.get("/audio/voices/1", params={"path": "/etc/passwd"})
    assert r.status_code == 200 and sf.info(io.BytesIO(r.content)).duration == pytest.approx(1.5)
    assert_error(client.get("/audio/voices/99"), 404, "segment_not_found")
    # registered entries that are not audio files are refused without echoing their bytes
    err = assert_error(client.get("/audio/voices/2"), 422, "segment_unreadable")
    assert "root:x" not in err["message"]
    assert_error(client.get("/audio/voices/3"), 422, "segment_unreadable")
    assert "missing" in assert_error(client.get("/audio/voices/4"), 404, "segment_not_found")["message"]
    # text databases hold no audio
    assert_error(client.get("/audio/en/0"), 422, "wrong_database_kind")


def test_text_queries_use_the_databases_own_encoder(
    client: TestClient, home: Path, api_env: ApiEnv, spread_st_dir: Path
) -> None:
    from index.sharded import ShardedIndex
    from miner.encoders.text import load_text_encoder

    by_name = {d["name"]: d for d in client.get("/indexes").json()}
    assert set(by_name) == {"en", "clips", "voices", "other"}  # alien records no encoder: still skipped
    assert by_name["other"]["space_id"] != api_env.space_id
    r = client.post("/search/text-to-text", json={"text": "the cat sleeps", "db": "other", "k": 3})
    assert r.status_code == 200, r.text
    query = load_text_encoder(str(spread_st_dir), device="cpu").encode(["the cat sleeps"])
    scores, ids = ShardedIndex.load(home / "other").search(query, 3)
    assert [h["id"] for h in r.json()["results"]] == ids[0].tolist()
    np.testing.assert_allclose([h["cosine"] for h in r.json()["results"]], scores[0], atol=1e-5)
    assert r.json()["results"][0]["text"] == "the cat sleeps"
    # the model's own databases still use the model's text encoder
    assert (
        client.post("/search/text-to-text", json={"text": "the cat", "db": "en", "k": 2}).status_code == 200
    )
    # a spoken query cannot reach another space: refused with the reason, not searched
    err = assert_error(
        client.post(
            "/search/speech-to-text",
            files={"audio": ("q.wav", api_env.clips[0], "audio/wav")},
            data={"text_db": "other", "k": "3"},
        ),
        422,
        "space_mismatch",
    )
    assert "text queries only" in err["message"]


def test_named_database_of_another_space_is_served_for_text(api_env: ApiEnv, home: Path) -> None:
    app = create_app(settings_for(api_env, home=home, databases=["other", "en"], load_in_background=False))
    with TestClient(app) as c:
        assert {d["name"] for d in c.get("/indexes").json()} == {"other", "en"}
        r = c.post("/search/text-to-text", json={"text": "le chat dort", "db": "other", "k": 1})
        assert r.status_code == 200 and r.json()["results"][0]["text"] == "le chat dort"


def test_cli_text_search_defaults_to_the_databases_encoder(
    api_env: ApiEnv, home: Path, tiny_st_dir: Path, spread_st_dir: Path
) -> None:
    from typer.testing import CliRunner

    from miner.cli import app
    from miner.spaces import SpaceMismatchError

    base = ["search", "--home", str(home), "--model", str(api_env.model_dir), "-k", "1"]
    # built with another encoder than the model's teacher: its own recorded encoder embeds the text
    result = CliRunner().invoke(app, [*base, "--text-db", "other", "--text", "der hund"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().split("\t")[-1] == "der hund"
    # an explicit --encoder still wins, and a mismatch still fails naming both spaces
    result = CliRunner().invoke(
        app, [*base, "--text-db", "other", "--text", "x", "--encoder", str(tiny_st_dir)]
    )
    assert isinstance(result.exception, SpaceMismatchError), result.output
    assert api_env.space_id in str(result.exception) and "database 'other'" in str(result.exception)
    result = CliRunner().invoke(
        app, [*base, "--text-db", "other", "--text", "der hund", "--encoder", str(spread_st_dir)]
    )
    assert result.exit_code == 0 and result.stdout.strip().endswith("der hund"), result.output
    # a database that records no encoder (precomputed vectors) falls back to the model's teacher: mismatch
    result = CliRunner().invoke(app, [*base, "--text-db", "alien", "--text", "x"])
    assert isinstance(result.exception, SpaceMismatchError), result.output
