"""miner.voices.augment: seeded and reproducible, each step measured (speed length, SNR, telephone band,
codec alignment, reverb decay, pitch), output always 16 kHz float32, finite and peak-limited."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from miner.types import SAMPLE_RATE
from miner.voices import augment as aug
from miner.voices.augment import AugmentConfig, AugmentRecord, apply_record, augment, draw_record
from tests._voice_fixtures import harmonic_tone, median_f0

NONE = AugmentConfig(p_speed=0, p_pitch=0, p_reverb=0, p_noise=0, p_telephone=0, p_codec=0, p_gain=0)


def only(**probabilities: float) -> AugmentConfig:
    """A config with every step off but the named ones (``speed=1.0`` -> ``p_speed=1.0``)."""
    return dataclasses.replace(NONE, **{f"p_{k}": v for k, v in probabilities.items()})


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


def _band_fraction(x: np.ndarray, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    return float(power[(freqs >= lo) & (freqs < hi)].sum() / power.sum())


def test_same_seed_same_audio_and_record_different_seed_different() -> None:
    x = harmonic_tone(2.0, seed=1)
    every = AugmentConfig(p_speed=1, p_pitch=1, p_reverb=1, p_noise=1, p_telephone=1, p_codec=1, p_gain=1)
    for config in (None, every):
        a, ra = augment(x, seed=11, config=config)
        b, rb = augment(x, seed=11, config=config)
        assert ra == rb and a.dtype == np.float32 and np.array_equal(a, b)
    c, rc = augment(x, seed=12, config=every)
    assert rc != ra and (len(c) != len(a) or not np.array_equal(a, c))


def test_record_reproduces_the_audio_bit_for_bit() -> None:
    x = harmonic_tone(2.5, seed=2)
    applied = 0
    for seed in range(12):
        y, record = augment(x, seed=seed)
        line = record.as_string()
        assert "\t" not in line and "\n" not in line
        again = AugmentRecord.from_string(line)
        assert again == record and AugmentRecord.from_dict(record.to_dict()) == record
        assert np.array_equal(apply_record(x, again), y)
        applied += line != "none"
    assert applied >= 6  # default probabilities apply something to most clips
    assert AugmentRecord.from_string("") == AugmentRecord() and AugmentRecord().as_string() == "none"
    with pytest.raises(ValueError, match="cannot read"):
        AugmentRecord.from_string("speed=1.1;echo=3")


def test_output_is_16k_float32_finite_and_peak_limited() -> None:
    x = harmonic_tone(1.5, seed=3, level=0.99)
    x[100] = np.nan  # a bad sample in the input must not spread
    loud = only(gain=1.0, noise=1.0)
    for seed in range(20):
        y, record = augment(x, seed=seed, config=loud if seed % 2 else None)
        assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()
        assert np.abs(y).max() <= aug.PEAK + 1e-6
        if record.speed is None:
            assert len(y) == len(x)  # only speed changes the length (16 kHz in, 16 kHz out)


def test_speed_changes_the_length_by_the_drawn_factor() -> None:
    x = harmonic_tone(3.0, f0=150.0, seed=4)
    for seed in range(4):
        y, record = augment(x, seed=seed, config=only(speed=1.0))
        assert record.speed is not None and 0.85 <= record.speed <= 1.15
        assert len(y) == round(len(x) / record.speed)
        assert median_f0(y) / median_f0(x) == pytest.approx(record.speed, rel=0.03)


def test_noise_snr_matches_the_drawn_snr() -> None:
    x = harmonic_tone(3.0, seed=5, level=0.1)  # quiet: the peak limiter stays out of the way
    kinds = set()
    for seed in range(12):
        y, record = augment(x, seed=seed, config=only(noise=1.0))
        assert record.noise is not None
        kind, snr, _ = record.noise
        kinds.add(kind)
        assert 5.0 <= snr <= 30.0
        assert _snr_db(x, y) == pytest.approx(snr, abs=0.1), kind
    assert kinds == {"white", "pink", "babble"}


def test_pink_noise_falls_with_frequency_and_babble_comes_from_the_clip() -> None:
    pink = aug.make_noise("pink", SAMPLE_RATE * 4, seed=1)
    assert _band_fraction(pink, 50, 500) > 5 * _band_fraction(
        pink, 4000, 4450
    )  # ~1/f: 10x less per Hz up there
    x = harmonic_tone(2.0, seed=6)
    babble = aug.make_noise("babble", len(x), seed=2, source=x)
    assert np.sqrt(np.mean(babble**2)) == pytest.approx(1.0, rel=1e-4)
    assert _band_fraction(babble, 4000, 8000) < 0.05  # the tone's spectrum, not white noise's (50%)


def test_telephone_removes_energy_above_3400_hz() -> None:
    rng = np.random.default_rng(7)
    white = (0.1 * rng.standard_normal(SAMPLE_RATE * 3)).astype(np.float32)
    y = aug.telephone(white)
    assert len(y) == len(white) and y.dtype == np.float32
    assert _band_fraction(y, 3400, 8000) < 1e-4
    assert _band_fraction(y, 0, 200) < 1e-3
    assert _band_fraction(y, 300, 3200) > 0.95
    out, record = augment(white, seed=0, config=only(telephone=1.0))
    assert record.telephone and _band_fraction(out, 3400, 8000) < 1e-4


@pytest.mark.parametrize("codec", aug.available_codecs())
def test_codec_round_trip_keeps_length_and_alignment(codec: str) -> None:
    x = harmonic_tone(2.0, seed=8)
    y = aug.codec_round_trip(x, codec, 0.6)
    assert len(y) == len(x) and y.dtype == np.float32
    core = slice(2000, -2000)
    lags = range(-40, 41)
    best = max(lags, key=lambda k: float(np.dot(np.roll(x, k)[core], y[core])))
    assert abs(best) <= 2  # no codec delay left in
    assert _snr_db(x, y) > 10.0


def test_codec_step_picks_among_available_codecs() -> None:
    x = harmonic_tone(1.0, seed=9)
    seen = set()
    for seed in range(15):
        y, record = augment(x, seed=seed, config=only(codec=1.0))
        assert record.codec is not None and record.codec[0] in aug.available_codecs()
        lo, hi = aug.CODECS[record.codec[0]][2]
        assert lo <= record.codec[1] <= hi and len(y) == len(x)
        seen.add(record.codec[0])
    assert seen == set(aug.available_codecs())
    with pytest.raises(ValueError, match="unknown codec"):
        aug.codec_round_trip(x, "aac", 0.5)


def test_room_impulse_response_decays_at_rt60_with_the_drawn_drr() -> None:
    for rt60, drr in ((0.3, 3.0), (0.8, 9.0)):
        h = aug.room_impulse_response(rt60, drr, seed=4)
        energy = h.astype(np.float64) ** 2
        assert h[0] == 1.0 and 10 * np.log10(energy[0] / energy[1:].sum()) == pytest.approx(drr, abs=0.01)
        # late decay: fit dB per second over 50 ms windows from 60 ms on; -60 dB per rt60
        win = int(0.05 * SAMPLE_RATE)
        starts = range(int(0.06 * SAMPLE_RATE), len(h) - win, win)
        levels = [10 * np.log10(energy[s : s + win].sum()) for s in starts]
        slope = np.polyfit([s / SAMPLE_RATE for s in starts], levels, 1)[0]
        assert slope == pytest.approx(-60.0 / rt60, rel=0.15)


def test_reverb_keeps_length_and_level() -> None:
    x = harmonic_tone(2.0, seed=10)
    y, record = augment(x, seed=3, config=only(reverb=1.0))
    assert record.reverb is not None and 0.15 <= record.reverb[0] <= 0.9
    assert len(y) == len(x)
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.01)
    assert not np.allclose(y, x, atol=1e-3)


def test_pitch_step_moves_f0_and_keeps_length() -> None:
    x = harmonic_tone(3.0, f0=140.0, seed=11)
    y, record = augment(x, seed=5, config=only(pitch=1.0))
    assert record.pitch is not None and len(y) == len(x)
    assert median_f0(y) / median_f0(x) == pytest.approx(2 ** (record.pitch / 12), rel=0.03)


def test_gain_scales_by_the_drawn_db() -> None:
    x = harmonic_tone(1.0, seed=12, level=0.05)
    y, record = augment(x, seed=1, config=only(gain=1.0))
    assert record.gain is not None and -18.0 <= record.gain <= 6.0
    assert np.allclose(y, x * 10 ** (record.gain / 20), atol=1e-6)


def test_no_step_is_the_identity_and_draws_do_not_depend_on_other_probabilities() -> None:
    x = harmonic_tone(1.0, seed=13)
    y, record = augment(x, seed=4, config=NONE)
    assert record == AugmentRecord() and np.array_equal(y, x)
    # the speed drawn for a seed is the same whether or not noise is on
    assert draw_record(21, only(speed=1.0)).speed == draw_record(21, only(speed=1.0, noise=1.0)).speed


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(p_noise=1.5)
    with pytest.raises(ValueError, match="noise_kinds"):
        AugmentConfig(noise_kinds=("brown",))
    with pytest.raises(ValueError, match="unknown codecs"):
        AugmentConfig(codecs=("aac",))
