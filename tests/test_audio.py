"""miner.audio: decoding, downmix, resampling, probing and every AudioError case (offline, tiny files)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from miner.audio import (
    SUPPORTED_EXTENSIONS,
    AudioError,
    AudioInfo,
    iter_audio_files,
    load_audio,
    probe,
    write_audio,
)
from miner.types import SAMPLE_RATE


def sine(seconds: float, sample_rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """A float32 sine of shape (n,), n = round(seconds * sample_rate)."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Frequency of the largest FFT magnitude bin (resolution sample_rate / len(wav) Hz)."""
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1.0 / sample_rate)[int(np.argmax(spectrum))])


def can_write(fmt: str, subtype: str | None) -> bool:
    if fmt not in sf.available_formats():
        return False
    return subtype is None or subtype in sf.available_subtypes(fmt)


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(missing)
    with pytest.raises(AudioError, match="does not exist"):
        probe(str(missing))


def test_directory_is_refused(tmp_path):
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)


def test_empty_bytes_and_empty_file(tmp_path):
    with pytest.raises(AudioError, match="empty"):
        load_audio(b"")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)


def test_garbage_bytes_names_supported_formats(tmp_path):
    garbage = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(AudioError, match="Supported formats: WAV, FLAC") as info:
        load_audio(garbage)
    assert "ffmpeg" in str(info.value)  # the fix is named
    path = tmp_path / "fake.mp3"
    path.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(path)
    with pytest.raises(AudioError, match="cannot decode"):
        probe(path)


def test_zero_sample_wav(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), SAMPLE_RATE)
    assert path.stat().st_size > 0  # a header, but no samples
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_in_float_wav(tmp_path, bad):
    wav = sine(0.5, SAMPLE_RATE)
    wav[4000] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, wav, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"1 NaN or infinite sample\(s\), the first at 0.250 s"):
        load_audio(path)


def test_too_short(tmp_path):
    path = write_audio(tmp_path / "short.wav", sine(0.3, SAMPLE_RATE))
    with pytest.raises(AudioError, match="under the minimum of 0.5 s"):
        load_audio(path, min_seconds=0.5)
    assert load_audio(path, min_seconds=0.3).shape == (4800,)  # exactly the minimum is fine


def test_too_long_is_refused_from_the_header(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "long.flac", sine(3.0, SAMPLE_RATE))
    assert load_audio(path, max_seconds=3.0).shape == (48000,)  # exactly the limit is fine

    def no_decoding(*args, **kwargs):
        raise AssertionError("samples were decoded before the length check")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(AudioError, match=r"lasts 3.0 s, over the limit of 2 s"):
        load_audio(path, max_seconds=2.0)
    with pytest.raises(AudioError, match="over the limit"):
        load_audio(path.read_bytes(), max_seconds=2.0)


def test_bad_limits_are_value_errors(tmp_path):
    path = write_audio(tmp_path / "a.wav", sine(0.2, SAMPLE_RATE))
    with pytest.raises(ValueError, match="min_seconds"):
        load_audio(path, min_seconds=-1.0)
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio(path, min_seconds=2.0, max_seconds=1.0)


# ---------------------------------------------------------------- decoding

ROUND_TRIPS = [
    # suffix, libsndfile format, subtype, lossless
    (".wav", "WAV", None, True),
    (".flac", "FLAC", None, True),
    (".ogg", "OGG", "VORBIS", False),
    (".opus", "OGG", "OPUS", False),
    (".mp3", "MP3", "MPEG_LAYER_III", False),
]


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "lossless"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS]
)
def test_round_trip(tmp_path, suffix, fmt, subtype, lossless):
    if not can_write(fmt, subtype) or suffix not in SUPPORTED_EXTENSIONS:
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}/{subtype}")
    original = sine(1.0, SAMPLE_RATE)
    path = write_audio(tmp_path / f"tone{suffix}", original)
    info = probe(path)
    assert (info.format, info.sample_rate, info.channels) == (fmt, SAMPLE_RATE, 1)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - len(original)) <= SAMPLE_RATE // 100  # codecs may pad a few ms
    assert np.abs(wav).max() <= 1.0
    assert dominant_hz(wav) == pytest.approx(440.0, abs=2.0)
    n = min(len(wav), len(original))
    if lossless:
        np.testing.assert_allclose(wav[:n], original[:n], atol=1.0 / 2**14)  # PCM_16 quantisation
    else:
        assert np.corrcoef(wav[:n], original[:n])[0, 1] > 0.99


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_frequency_and_length(tmp_path, rate):
    original = sine(1.0, rate)
    path = tmp_path / f"tone{rate}.wav"
    sf.write(path, original, rate, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.dtype == np.float32
    assert abs(len(wav) - len(original) * SAMPLE_RATE / rate) <= 1
    assert dominant_hz(wav) == pytest.approx(440.0, abs=1.5)
    # HQ resampling keeps the amplitude of an in-band tone (0.5) away from the edges.
    assert np.abs(wav[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_stereo_is_averaged(tmp_path):
    left, right = sine(0.5, SAMPLE_RATE, amp=0.6), sine(0.5, SAMPLE_RATE, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.shape == (8000,)
    np.testing.assert_allclose(wav, (left + right) / 2, atol=1e-6)


def test_integer_pcm_is_normalised_and_float_is_clipped(tmp_path):
    pcm = np.array([0, 16384, -16384, 32767, -32768] * 400, dtype=np.int16)
    sf.write(tmp_path / "int.wav", pcm, SAMPLE_RATE, subtype="PCM_16")
    wav = load_audio(tmp_path / "int.wav")
    np.testing.assert_allclose(wav[:5], [0.0, 0.5, -0.5, 32767 / 32768, -1.0], atol=1e-6)

    loud = np.full(1600, 1.5, dtype=np.float32)
    loud[::2] = -3.0
    sf.write(tmp_path / "loud.wav", loud, SAMPLE_RATE, subtype="FLOAT")
    wav = load_audio(tmp_path / "loud.wav")
    assert wav.max() == 1.0 and wav.min() == -1.0


def test_bytes_input_matches_path(tmp_path):
    path = write_audio(tmp_path / "tone.flac", sine(0.5, 22050), sample_rate=22050)
    from_path = load_audio(path)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), from_path)
    np.testing.assert_array_equal(load_audio(bytearray(path.read_bytes())), from_path)
    np.testing.assert_array_equal(load_audio(str(path)), from_path)


def test_probe_fields(tmp_path):
    stereo = np.stack([sine(0.5, 22050), sine(0.5, 22050, freq=220)], axis=1)
    path = tmp_path / "probe.flac"
    sf.write(path, stereo, 22050, subtype="PCM_24")
    info = probe(path)
    assert info == AudioInfo(
        duration=0.5, sample_rate=22050, channels=2, format="FLAC", subtype="PCM_24", frames=11025
    )
    assert probe(path.read_bytes()) == info


# ---------------------------------------------------------------- files


def test_iter_audio_files(tmp_path):
    for rel in ["b.wav", "a/Z.FLAC", "a/x.txt", "a/deep/c.opus", ".hidden/d.wav", "e.mp3", "notes.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_audio_files(tmp_path)]
    expected = ["a/Z.FLAC", "a/deep/c.opus", "b.wav"]
    if ".mp3" in SUPPORTED_EXTENSIONS:
        expected.append("e.mp3")
    assert found == expected
    assert list(iter_audio_files(tmp_path / "b.wav")) == [tmp_path / "b.wav"]
    with pytest.raises(AudioError, match="does not exist"):
        iter_audio_files(tmp_path / "missing")


def test_supported_extensions_are_lower_case():
    assert {".wav", ".flac", ".ogg"} <= SUPPORTED_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in SUPPORTED_EXTENSIONS)


def test_write_audio_errors(tmp_path):
    with pytest.raises(AudioError, match="unknown audio suffix '.xyz'"):
        write_audio(tmp_path / "a.xyz", sine(0.1, SAMPLE_RATE))
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "a.wav", np.array([0.0, np.nan], np.float32))
    if can_write("OGG", "OPUS"):
        with pytest.raises(AudioError, match="22050 Hz"):
            write_audio(tmp_path / "a.opus", sine(0.1, 22050), sample_rate=22050)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left behind
