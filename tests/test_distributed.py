"""The Ray engine gives the local engine's outputs: text databases, mined pairs, retried and resumed blocks.

A local Ray (2 CPUs, no dashboard) is started once for the module and shut down after it: as tight as the
pools (2 actors of 1 CPU), so an actor left behind by a failed job shows up as a test failure, not a hang.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("ray.data", reason="ray[data] is not installed: pip install 'samu-miner[ray]'")

import ray  # noqa: E402

from miner.audio import write_audio  # noqa: E402
from miner.cli import app  # noqa: E402
from miner.database_build import build_text_database  # noqa: E402
from miner.distributed import RayOptions, ray_build_text_database, ray_run_mine  # noqa: E402
from miner.encoders.samu import SpeechEncoder  # noqa: E402
from miner.encoders.text import load_text_encoder  # noqa: E402
from miner.mine_job import MineOptions, database_target, run_mine  # noqa: E402
from tests.conftest import TINY_WORDS, make_clip  # noqa: E402

pytestmark = pytest.mark.slow
TEST_TIMEOUT_S = 600  # each test takes 10-100 s on 2 busy cores; a Ray hang fails here instead of stalling CI

runner = CliRunner()
WORDS = TINY_WORDS


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def fail_instead_of_hanging() -> Iterator[None]:
    """Fail a test running past TEST_TIMEOUT_S, printing every thread's stack (no pytest-timeout needed)."""

    def timeout(signum: int, frame: object) -> None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise TimeoutError(f"Ray test still running after {TEST_TIMEOUT_S} s: a hang (stacks on stderr)")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(TEST_TIMEOUT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _wait_for_free_cpus(n: float, seconds: float = 60.0) -> float:
    """Free CPUs of the local Ray once it reports ``n`` (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while (free := ray.available_resources().get("CPU", 0.0)) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return free


def _corpus(path: Path, n: int = 40, seed: int = 5) -> Path:
    """n sentences with duplicates inside and across blocks, and a blank line."""
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(WORDS, rng.integers(1, 9))) for _ in range(n)]
    for i in range(3, n, 7):
        lines[i] = lines[i - 2]  # a duplicate in the same or the previous block
    lines[n - 1] = lines[0]  # a duplicate several blocks later
    lines.insert(n // 4, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file but the manifest and the shards' vectors (compared by :func:`_assert_same_vectors`)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.name != "manifest.json" and p.suffix != ".faiss"
    }


def _assert_same_vectors(a: Path, b: Path) -> None:
    """Same shards, same ids in the same order, vectors equal up to the last bits: an encoder's float sums
    depend on the shape of the batch a text sits in (padding length), and Ray's blocks batch differently."""
    import faiss

    shards = sorted(p.name for p in a.glob("*.faiss"))
    assert shards and shards == sorted(p.name for p in b.glob("*.faiss"))
    for name in shards:
        x, y = faiss.read_index(str(a / name)), faiss.read_index(str(b / name))
        assert x.ntotal == y.ntotal
        np.testing.assert_allclose(x.reconstruct_n(0, x.ntotal), y.reconstruct_n(0, y.ntotal), atol=1e-5)


def _manifest(folder: Path) -> dict:
    """The manifest without its creation time and the shards' checksums (their vectors may differ in the last
    bits, see :func:`_assert_same_vectors`)."""
    data = json.loads((folder / "manifest.json").read_text())
    data.pop("created")
    for shard in data["shards"]:
        shard.pop("sha256")
    return data


def test_text_database_equals_local_and_a_failed_block_is_retried_once(
    tmp_path: Path, tiny_st_dir: Path, local_ray: None, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = _corpus(tmp_path / "c.txt")
    common = {"factory": "Flat", "shard_size": 16, "progress": False}
    local = build_text_database(
        "en", [corpus], encoder=load_text_encoder(str(tiny_st_dir)), root=tmp_path / "local", **common
    )
    flag = tmp_path / "failed-once"
    with caplog.at_level(logging.INFO, logger="miner.distributed"):
        remote = ray_build_text_database(
            "en",
            [corpus],
            encoder_name=str(tiny_st_dir),
            ray=RayOptions(workers=2, block_size=7, fail_once=str(flag)),
            root=tmp_path / "ray",
            **common,
        )
    assert flag.is_file(), "the fault hook never fired"
    assert "blocks retried: [" in caplog.text
    assert (remote.added, remote.duplicates, remote.blank) == (local.added, local.duplicates, local.blank)
    lines = [t for t in corpus.read_text().splitlines() if t]
    assert local.duplicates == len(lines) - len(set(lines)) >= 5 and len(local.manifest.shards) >= 2
    # Byte-identical store, same vectors in the same shards: no block lost, none added twice, same order.
    assert _folder_bytes(tmp_path / "ray" / "en") == _folder_bytes(tmp_path / "local" / "en")
    _assert_same_vectors(tmp_path / "ray" / "en", tmp_path / "local" / "en")
    assert _manifest(tmp_path / "ray" / "en") == _manifest(tmp_path / "local" / "en")
    assert not (tmp_path / "ray" / ".ray-work" / "index-en").exists()


def test_a_failed_job_resumes_without_redoing_finished_blocks(
    tmp_path: Path, tiny_st_dir: Path, local_ray: None
) -> None:
    corpus = _corpus(tmp_path / "c.txt", n=30, seed=9)
    flag = tmp_path / "failed-once"
    kwargs = {"encoder_name": str(tiny_st_dir), "factory": "Flat", "progress": False, "keep_blocks": True}
    gc.disable()  # only the engine's own clean-up may free the failed pool, not a lucky garbage collection
    try:
        with pytest.raises(RuntimeError, match="run the same command again"):
            ray_build_text_database(
                "en",
                [corpus],
                ray=RayOptions(workers=2, block_size=6, retries=0, fail_once=str(flag)),
                root=tmp_path,
                **kwargs,
            )
        # Both actors exit: a leftover one would hold its CPU and the rerun's pool could never start.
        assert _wait_for_free_cpus(2) == 2
    finally:
        gc.enable()
    work = tmp_path / ".ray-work" / "index-en"
    failed = int(flag.read_text())
    assert not (work / f"block_{failed:05d}.done").exists()
    finished = {
        p.name: p.stat().st_mtime_ns for p in work.glob("block_*.npy") if p.with_suffix(".done").exists()
    }
    report = ray_build_text_database(
        "en", [corpus], ray=RayOptions(workers=2, block_size=6), root=tmp_path, **kwargs
    )
    assert report.manifest.complete and report.inputs == 30
    assert {name: (work / name).stat().st_mtime_ns for name in finished} == finished  # not recomputed
    assert sorted(p.name for p in work.glob("block_*.done")) == [f"block_{b:05d}.done" for b in range(5)]


def test_a_pool_that_cannot_start_fails_with_an_error(
    tmp_path: Path, tiny_st_dir: Path, local_ray: None
) -> None:
    from ray.util.placement_group import placement_group, remove_placement_group

    taken = placement_group([{"CPU": 2}])  # another job holds every CPU
    ray.get(taken.ready())
    try:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"2 Ray workers .* did not all start within 2 s"):
            ray_build_text_database(
                "en",
                [_corpus(tmp_path / "c.txt", n=12)],
                encoder_name=str(tiny_st_dir),
                ray=RayOptions(workers=2, block_size=6, start_timeout=2),
                root=tmp_path,
                progress=False,
            )
        assert time.monotonic() - t0 < 60
    finally:
        remove_placement_group(taken)
    # The pool's actors still pending got the CPUs; each fails to sign in to its finished stage and exits
    # (a new worker process first: up to ~30 s on 2 cores shared with other jobs).
    assert _wait_for_free_cpus(2, seconds=180) == 2
    with pytest.raises(ValueError, match="start_timeout=0"):
        RayOptions(start_timeout=0)


def test_embed_text_cli_with_ray_matches_local(tmp_path: Path, tiny_st_dir: Path, local_ray: None) -> None:
    corpus = _corpus(tmp_path / "c.txt", n=12)
    for engine in ("local", "ray"):
        result = runner.invoke(
            app,
            ["embed", "text", "-i", str(corpus), "-o", str(tmp_path / f"{engine}.npy"), "--encoder",
             str(tiny_st_dir), "--engine", engine, "--workers", "2"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output + repr(result.exception)
    np.testing.assert_array_equal(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "local.npy"))
    meta = [json.loads((tmp_path / f"{e}.json").read_text()) for e in ("local", "ray")]
    assert meta[0] == meta[1] and meta[0]["count"] == 12
    assert not list(tmp_path.glob(".ray.npy.blocks"))


def test_mined_pairs_equal_local(
    tmp_path: Path, tiny_whisper_dir: Path, tiny_st_dir: Path, local_ray: None
) -> None:
    rng = np.random.default_rng(11)
    audio = tmp_path / "audio"
    clips = [make_clip(rng, 1.0 + 0.25 * i) for i in range(7)]
    for i, c in enumerate(clips):
        write_audio(audio / ("fr" if i % 2 else "de") / f"clip{i}.flac", c)
    (audio / "broken.flac").write_bytes(b"not audio")
    model_dir = SpeechEncoder.from_backbone(
        str(tiny_whisper_dir), dim=16, space_id="st-model-16", teacher=str(tiny_st_dir)
    ).save_pretrained(tmp_path / "samu")
    encoder = SpeechEncoder.from_pretrained(model_dir)
    x = encoder.encode(clips)
    vectors = np.concatenate([x[:4], rng.standard_normal((30, 16)).astype(np.float32)])
    order = rng.permutation(len(vectors))
    texts = [f"planted {i}" for i in range(4)] + [f"distractor {i}" for i in range(30)]
    (tmp_path / "t.txt").write_text("\n".join(texts[j] for j in order) + "\n")
    np.save(tmp_path / "emb.npy", vectors[order])
    build_text_database(
        "en",
        [tmp_path / "t.txt"],
        embeddings=tmp_path / "emb.npy",
        space_id="st-model-16",
        factory="Flat",
        shard_size=10,
        root=tmp_path / "home",
        progress=False,
    )
    folder = tmp_path / "home" / "en"
    opts = MineOptions(k=2, threshold=0.0)
    common = {
        "speech_encoder": encoder,
        "target": "en",
        "target_kind": "text",
        "open_target": lambda: database_target(folder),
        "opts": opts,
        "progress": False,
    }
    local = run_mine(audio, tmp_path / "local", **common)
    flag = tmp_path / "failed-once"
    remote = ray_run_mine(
        audio,
        tmp_path / "ray",
        model_path=str(model_dir),
        ray=RayOptions(workers=2, block_size=3, fail_once=str(flag)),
        db_folder=folder,
        **common,
    )
    assert flag.is_file(), "the fault hook never fired"
    assert local.pairs >= 4 and remote.pairs == local.pairs
    for name in ("pairs.tsv", "pairs.jsonl", "failures.tsv"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text(), name
    # The speech side came from the actors (cache complete before the driver's pass) and kNN from 2 blocks.
    assert remote.files_cached == 7 and remote.files_failed == 1
    knn = list((tmp_path / "ray" / "cache").glob("knn-*/block_*.done"))
    assert len(knn) == 2
