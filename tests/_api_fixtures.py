"""Shared fixtures of the API tests: a tiny SAMU model, its text encoder, and a data root with databases.

Import the fixtures into a test module (pytest finds fixtures in the module namespace)::

    from _api_fixtures import api_env  # noqa: F401
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

SPEECH_DIM = 16
SENTENCES = [
    "the cat sleeps on the sofa",
    "the dog runs",
    "a cat runs on the house",
    "the dog sleeps",
    "le chat dort",
    "le chien dort sur la maison",
    "der hund schläft",
    "die katze schläft",
    "a dog on the sofa",
    "the house",
    "le chat",
    "der hund",
    "the cat",
    "a dog runs on the sofa",
]


def clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A speech-like test signal (harmonics, slow envelope, noise), float32 16 kHz (as conftest.make_clip)."""
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = rng.uniform(100, 220)
    sig = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 5))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
    return (0.2 * sig * env + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@dataclass
class ApiEnv:
    """What the API tests need: model folders, a data root and the in-process reference objects."""

    model_dir: Path
    text_model_dir: Path
    home: Path
    space_id: str
    speech: Any  # SpeechEncoder loaded from model_dir
    text: Any  # its text encoder
    clips: list[bytes]  # WAV uploads, PCM_16
    speech_rows: list[dict[str, Any]]


@pytest.fixture(scope="session")
def api_env(tmp_path_factory: pytest.TempPathFactory, tiny_whisper_dir: Path, tiny_st_dir: Path) -> ApiEnv:
    """A tiny SAMU model (whisper backbone, 16-d, paired with the tiny sentence-transformers teacher) and a
    data root with: ``en`` (text, with margins), ``clips`` (speech), ``alien`` (text in another space)."""
    import torch

    torch.set_num_threads(1)
    from index.build import build_index
    from index.margins import compute_reference_margins
    from miner.audio import load_audio
    from miner.encoders.samu import SpeechEncoder
    from miner.encoders.text import load_text_encoder_for
    from miner.spaces import space_id_for

    root = tmp_path_factory.mktemp("api")
    space = space_id_for(str(tiny_st_dir), SPEECH_DIM)
    model_dir = root / "samu"
    SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=SPEECH_DIM, space_id=space, teacher=str(tiny_st_dir), seed=0
    ).save_pretrained(model_dir)
    speech = SpeechEncoder.from_pretrained(model_dir)
    text = load_text_encoder_for(speech, device="cpu")
    assert text.space_id == space and text.dim == SPEECH_DIM

    rng = np.random.default_rng(7)
    clips = [wav_bytes(clip(rng, s)) for s in (1.0, 1.6, 0.7, 1.3, 2.0, 0.9, 1.1, 1.8)]
    wavs = [load_audio(c) for c in clips]
    speech_vecs = speech.encode(wavs, batch_size=4)

    home = root / "home"
    rows = [
        {
            "id": f"s{i}",
            "text": t,
            "lang": "fr" if t.startswith("le") else "en",
            "source": "corpus.txt",
            "line": i + 1,
        }
        for i, t in enumerate(SENTENCES)
    ]
    # Seeded random unit vectors of the space stand in for sentence embeddings, so that result order never
    # depends on how well a tiny random teacher separates sentences (ties would make it arbitrary).
    text_vecs = np.random.default_rng(11).standard_normal((len(SENTENCES), SPEECH_DIM)).astype(np.float32)
    build_index(
        home / "en", text_vecs, rows, space_id=space, kind="text", factory="Flat", encoder_id=str(tiny_st_dir)
    )
    compute_reference_margins(home / "en", speech_vecs, k=3, reference_space_id=space)
    speech_rows = [
        {
            "id": f"u{i}",
            "path": f"audio/clip{i}.wav",
            "start": 0.5 * i,
            "duration": len(w) / 16000,
            "lang": "en",
        }
        for i, w in enumerate(wavs)
    ]
    build_index(home / "clips", speech_vecs, speech_rows, space_id=space, kind="speech", factory="Flat")
    alien = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    build_index(home / "alien", alien, [{"text": f"x{i}"} for i in range(5)], space_id="other-8", kind="text")
    return ApiEnv(model_dir, tiny_st_dir, home, space, speech, text, clips, speech_rows)


def settings_for(env: ApiEnv, **overrides: Any) -> Any:
    from api.settings import Settings

    values: dict[str, Any] = {
        "home": env.home,
        "speech_model": str(env.model_dir),
        "device": "cpu",
        "batch_wait_ms": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed (bounded waits only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def wait_ready(client: Any, timeout: float = 60.0) -> None:
    """Poll ``/readyz`` of a sync client until 200; fail the test with the last answer otherwise."""
    last: list[Any] = []

    def ready() -> bool:
        last[:] = [client.get("/readyz")]
        return last[0].status_code == 200

    if not wait_until(ready, timeout):
        pytest.fail(f"server not ready after {timeout} s: {last[0].status_code} {last[0].text}")


async def await_ready(app: Any, timeout: float = 60.0) -> None:
    if not await app.state.service.wait_loaded(timeout):
        pytest.fail(f"app not ready after {timeout} s: {app.state.service.error}")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response has ``status`` and the API's error shape with ``code``; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return body["error"]
