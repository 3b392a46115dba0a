"""Cached backbone frames: segments shared between utterance lists, resumable builds, older caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._train_fixtures import write_tiny_corpus


@pytest.fixture(scope="module")
def model_and_utts(tiny_whisper_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from miner.encoders.samu import SpeechEncoder
    from miner.train.data import read_manifest

    torch.set_num_threads(1)
    corpus = write_tiny_corpus(tmp_path_factory.mktemp("corpus"))
    model = SpeechEncoder.from_backbone(str(tiny_whisper_dir), dim=16, space_id="test-16", teacher="none")
    return model, read_manifest(corpus)


def _frames(cache, i: int) -> np.ndarray:
    out = cache.batch([i])
    return out["frames"][0][out["mask"][0]].numpy()


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("frames-*.json"))


def test_a_longer_list_computes_only_its_new_utterances(model_and_utts, tmp_path: Path) -> None:
    from miner.train.features import FrameCache

    model, utts = model_and_utts
    first = FrameCache.build_or_open(model, utts[:10], tmp_path, 4.0, progress=False)
    assert len(_segments(tmp_path)) == 1
    both = FrameCache.build_or_open(model, utts, tmp_path, 4.0, progress=False)
    segments = _segments(tmp_path)
    assert len(segments) == 2 and json.loads(segments[0].read_text())["utterances"] + json.loads(
        segments[1].read_text()
    )["utterances"] == len(utts)
    for i in range(10):  # the first ten come from the first segment, unchanged
        np.testing.assert_array_equal(_frames(both, i), _frames(first, i))
    alone = FrameCache.build_or_open(model, utts[10:], tmp_path / "alone", 4.0, progress=False)
    for i in range(10, len(utts)):
        np.testing.assert_allclose(_frames(both, i), _frames(alone, i - 10), atol=1e-2)
    # The same list again, reordered: nothing computed, rows follow the new order.
    again = FrameCache.build_or_open(model, utts[::-1], tmp_path, 4.0, progress=False)
    assert len(_segments(tmp_path)) == 2
    np.testing.assert_array_equal(_frames(again, 0), _frames(both, len(utts) - 1))


def test_a_build_that_dies_keeps_its_finished_segments(
    model_and_utts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miner.train import features

    model, utts = model_and_utts
    monkeypatch.setattr(features, "SEGMENT_UTTERANCES", 5)
    real = features._compute_segment
    calls: list[int] = []

    def dies_on_the_third(backbone, chunk, *args, **kwargs):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(backbone, chunk, *args, **kwargs)

    monkeypatch.setattr(features, "_compute_segment", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        features.FrameCache.build_or_open(model, utts, tmp_path, 4.0, progress=False)
    assert len(_segments(tmp_path)) == 2 and not list(tmp_path.glob(".*.bin"))  # no half-written segment
    monkeypatch.setattr(features, "_compute_segment", real)
    cache = features.FrameCache.build_or_open(model, utts, tmp_path, 4.0, progress=False)
    assert len(_segments(tmp_path)) == 4  # 16 utterances: 5 + 5 kept, then 5 + 1
    assert len(cache) == len(utts) and all(_frames(cache, i).shape[0] > 0 for i in range(len(utts)))


def test_a_cache_from_before_segments_is_reused_for_a_longer_list(model_and_utts, tmp_path: Path) -> None:
    from miner.train.features import FrameCache

    model, utts = model_and_utts
    first = FrameCache.build_or_open(model, utts[:10], tmp_path, 4.0, progress=False)
    (stem_json,) = _segments(tmp_path)
    # What older versions wrote: no utterance list, no backbone fingerprint.
    stem_json.with_suffix(".utts.txt").unlink()
    meta = json.loads(stem_json.read_text())
    del meta["backbone"]
    stem_json.write_text(json.dumps(meta))
    assert len(FrameCache.build_or_open(model, utts[:10], tmp_path, 4.0, progress=False)) == 10
    assert len(_segments(tmp_path)) == 1  # opened and described, nothing computed
    both = FrameCache.build_or_open(model, utts, tmp_path, 4.0, progress=False)
    assert len(_segments(tmp_path)) == 2
    np.testing.assert_array_equal(_frames(both, 3), _frames(first, 3))


def test_the_same_file_through_another_manifest_folder_is_not_recomputed(model_and_utts, tmp_path: Path) -> None:
    """Manifests in sibling folders name one clip as ``run1/../x.flac`` and ``run2/../x.flac``: one cache entry."""
    import dataclasses

    from miner.train.features import FrameCache

    model, utts = model_and_utts

    def via(folder: str) -> list:
        (utts[0].audio.parent / folder).mkdir(exist_ok=True)  # the path must open, `..` and all
        return [dataclasses.replace(u, audio=u.audio.parent / folder / ".." / u.audio.name) for u in utts[:6]]

    first = FrameCache.build_or_open(model, via("run1"), tmp_path / "cache", 4.0, progress=False)
    second = FrameCache.build_or_open(model, via("run2"), tmp_path / "cache", 4.0, progress=False)
    assert len(_segments(tmp_path / "cache")) == 1
    for i in range(6):
        np.testing.assert_array_equal(_frames(second, i), _frames(first, i))
