"""miner.segment: candidate windows on hand-made regions, silero-vad on synthetic speech, Segment records."""

from __future__ import annotations

import itertools
import shutil
import subprocess

import numpy as np
import pytest

from miner.audio import load_audio
from miner.segment import candidate_windows, cut, segment_recording, vad_regions
from miner.types import SAMPLE_RATE, seconds_to_samples

ESPEAK = shutil.which("espeak-ng") or "/usr/bin/espeak-ng"

# ---------------------------------------------------------------- candidate_windows


def test_long_pause_breaks_runs():
    regions = [(0.0, 1.0), (1.5, 3.0), (6.0, 7.0), (7.5, 9.0)]  # 3 s pause between 3.0 and 6.0
    assert candidate_windows(regions, min_seconds=1.0, max_seconds=20.0, max_pause_seconds=2.0) == [
        (0.0, 1.0),
        (0.0, 3.0),
        (1.5, 3.0),
        (6.0, 7.0),
        (6.0, 9.0),
        (7.5, 9.0),
    ]
    # A pause of exactly max_pause_seconds is allowed (only a longer one breaks a run).
    assert (0.0, 9.0) in candidate_windows(regions, max_pause_seconds=3.0)


def test_length_limits():
    regions = [(0.0, 0.5), (0.6, 1.2), (1.3, 4.0)]
    assert candidate_windows(regions, min_seconds=1.0, max_seconds=3.0) == [(0.0, 1.2), (1.3, 4.0)]
    assert candidate_windows(regions, min_seconds=5.0, max_seconds=6.0) == []
    assert candidate_windows([], min_seconds=1.0) == []


def test_long_single_region_is_cut_into_equal_pieces():
    assert candidate_windows([(0.0, 45.0)], max_seconds=20.0) == [(0.0, 15.0), (15.0, 30.0), (30.0, 45.0)]
    # Pieces act as regions: the last one joins a short neighbour when the run stays within the limits.
    assert candidate_windows([(0.0, 45.0), (46.0, 47.0)], max_seconds=20.0) == [
        (0.0, 15.0),
        (15.0, 30.0),
        (30.0, 45.0),
        (30.0, 47.0),
        (46.0, 47.0),
    ]
    assert candidate_windows([(2.0, 22.0)], max_seconds=20.0) == [(2.0, 22.0)]  # exactly max: not cut


def test_order_is_deterministic_and_input_order_free():
    regions = [(0.0, 1.2), (1.4, 2.0), (2.5, 4.0), (4.1, 5.0), (8.0, 9.5)]
    expected = candidate_windows(regions, max_seconds=4.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        shuffled = [regions[i] for i in rng.permutation(len(regions))]
        assert candidate_windows(shuffled, max_seconds=4.0) == expected
    assert expected == sorted(expected)


def brute_force_windows(regions, min_s, max_s, pause):
    """Oracle: test every run i..j with no early exit."""
    out = set()
    for i, j in itertools.combinations_with_replacement(range(len(regions)), 2):
        gaps = [regions[k + 1][0] - regions[k][1] for k in range(i, j)]
        span = regions[j][1] - regions[i][0]
        if all(g <= pause for g in gaps) and min_s <= span <= max_s:
            out.add((regions[i][0], regions[j][1]))
    return sorted(out)


def test_matches_brute_force_on_random_regions():
    rng = np.random.default_rng(42)
    for _ in range(20):
        lengths = rng.uniform(0.2, 6.0, 25).round(2)
        pauses = rng.uniform(0.05, 4.0, 25).round(2)
        regions, t = [], 0.0
        for length, pause in zip(lengths, pauses, strict=True):
            t += pause
            regions.append((round(t, 2), round(t + length, 2)))
            t += length
        got = candidate_windows(regions, min_seconds=1.0, max_seconds=8.0, max_pause_seconds=2.0)
        assert got == brute_force_windows(regions, 1.0, 8.0, 2.0)
        assert got  # the data is rich enough that some window exists


@pytest.mark.parametrize(
    ("regions", "kwargs", "match"),
    [
        ([(1.0, 1.0)], {}, "invalid"),
        ([(-1.0, 1.0)], {}, "invalid"),
        ([(0.0, 2.0), (1.0, 3.0)], {}, "overlap"),
        ([(0.0, 2.0)], {"min_seconds": 0.0}, "min_seconds"),
        ([(0.0, 2.0)], {"min_seconds": 3.0, "max_seconds": 2.0}, "max_seconds"),
        ([(0.0, 2.0)], {"max_pause_seconds": -1.0}, "max_pause_seconds"),
    ],
)
def test_bad_input_raises(regions, kwargs, match):
    with pytest.raises(ValueError, match=match):
        candidate_windows(regions, **kwargs)


# ---------------------------------------------------------------- cut and segment_recording


def test_cut_uses_seconds_to_samples():
    wav = np.arange(SAMPLE_RATE * 2, dtype=np.float32)
    piece = cut(wav, 0.5, 0.25)
    assert piece.shape == (seconds_to_samples(0.25),)
    assert piece[0] == seconds_to_samples(0.5)
    assert cut(wav, 1.9, 0.105).shape == (1600,)  # 5 ms past the end: clamped
    with pytest.raises(ValueError, match="runs past the audio"):
        cut(wav, 1.5, 1.0)
    with pytest.raises(ValueError, match="duration > 0"):
        cut(wav, 0.0, 0.0)


def test_segment_recording_file_mode():
    wav = np.zeros(40000, dtype=np.float32)
    (seg,) = segment_recording("talks/a.wav", "/data/talks/a.wav", wav, mode="file", lang="fr")
    assert seg.id == "talks/a.wav@0.00-2.50"
    assert (seg.recording_id, seg.path, seg.start, seg.duration, seg.lang) == (
        "talks/a.wav",
        "/data/talks/a.wav",
        0.0,
        2.5,
        "fr",
    )
    with pytest.raises(ValueError, match="mode"):
        segment_recording("r", "r.wav", wav, mode="words")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        segment_recording("r", "r.wav", np.zeros((10, 2), np.float32), mode="file")


# ---------------------------------------------------------------- silero-vad


def speak(text: str, path) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng, trimmed to its voiced part, as 16 kHz float32 samples."""
    subprocess.run([ESPEAK, "-v", "en", "-w", str(path), text], check=True, capture_output=True, timeout=30)
    wav = load_audio(path)
    loud = np.flatnonzero(np.abs(wav) > 0.01)
    return wav[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def two_utterances(tmp_path_factory):
    """0.5 s silence, utterance, 3 s silence, utterance, 0.5 s silence; with the utterances' true spans."""
    if not shutil.which(ESPEAK):
        pytest.skip(
            f"espeak-ng not found at {ESPEAK}: install it (apt-get install espeak-ng) to test the VAD"
        )
    tmp = tmp_path_factory.mktemp("speech")
    first = speak("the quick brown fox jumps over the lazy dog", tmp / "one.wav")
    second = speak("she sells sea shells by the sea shore", tmp / "two.wav")

    def silence(s):
        return np.zeros(round(s * SAMPLE_RATE), np.float32)

    wav = np.concatenate([silence(0.5), first, silence(3.0), second, silence(0.5)])
    t1 = 0.5 + len(first) / SAMPLE_RATE
    t2 = t1 + 3.0
    spans = [(0.5, t1), (t2, t2 + len(second) / SAMPLE_RATE)]
    return wav, spans


def test_vad_finds_two_utterances(two_utterances):
    import torch

    wav, spans = two_utterances
    torch.set_num_threads(2)
    try:
        regions = vad_regions(wav)
        assert torch.get_num_threads() == 2  # loading silero-vad must not change the process' threads
    finally:
        torch.set_num_threads(1)
    assert regions == sorted(regions)
    tol = 0.3
    groups = [[r for r in regions if a - tol <= r[0] and r[1] <= b + tol] for a, b in spans]
    assert all(groups), f"no region inside one utterance: regions={regions}, utterances={spans}"
    assert sum(len(g) for g in groups) == len(regions), f"a region crosses the pause: {regions}"
    for (a, b), group in zip(spans, groups, strict=True):
        assert group[0][0] == pytest.approx(a, abs=tol)
        assert group[-1][1] == pytest.approx(b, abs=tol)
    # With pauses up to 2 s allowed, no window bridges the 3 s pause.
    windows = candidate_windows(regions)
    assert (groups[0][0][0], groups[0][-1][1]) in windows
    assert all(not (w[0] < spans[0][1] and w[1] > spans[1][0]) for w in windows)


def test_vad_silence_has_no_region():
    assert vad_regions(np.zeros(3 * SAMPLE_RATE, np.float32)) == []
    assert vad_regions(np.zeros(0, np.float32)) == []


def test_vad_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        vad_regions(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="threshold"):
        vad_regions(np.zeros(100, np.float32), threshold=1.5)


def test_segment_recording_vad_mode(two_utterances):
    wav, spans = two_utterances
    segments = segment_recording("rec", "rec.wav", wav, mode="vad", min_seconds=1.0, max_seconds=20.0)
    assert segments, "speech should give at least one window"
    assert [(s.start, s.end) for s in segments] == sorted((s.start, s.end) for s in segments)
    for seg in segments:
        assert seg.id == f"rec@{seg.start:.2f}-{seg.end:.2f}"
        assert 1.0 - 1e-3 <= seg.duration <= 20.0 + 1e-3
        assert seg.start >= 0.0 and seg.end <= len(wav) / SAMPLE_RATE + 1e-3
        assert cut(wav, seg.start, seg.duration).shape[0] == pytest.approx(seg.duration * SAMPLE_RATE, abs=2)
    assert len({s.id for s in segments}) == len(segments)
