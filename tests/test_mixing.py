import numpy as np
import pytest

from avasr.data.mixing import (
    NoiseError,
    babble,
    fit_length,
    make_noise,
    mix_at_snr,
    pink_noise,
    utterance_rng,
    white_noise,
)

SAMPLE_RATE = 16000
SNR_TOLERANCE_DB = 0.1  # the requirement; the implementation is exact to float32 rounding


def _snr_db(speech: np.ndarray, noisy: np.ndarray) -> float:
    """The module's documented definition: mean squares over all samples of the speech's length."""
    speech = speech.astype(np.float64)
    added = noisy.astype(np.float64) - speech
    return 10 * np.log10(np.mean(speech**2) / np.mean(added**2))


def _tone(frequency: float, n: int, amplitude: float = 1.0) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(n) / SAMPLE_RATE)).astype(np.float32)


def _speech_like(n: int, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics: not white, not stationary, like speech as far as power goes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    voiced = sum(np.sin(2 * np.pi * 120 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 8))
    return (0.1 * envelope * voiced).astype(np.float32)


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
def test_mix_hits_requested_snr_for_every_kind(kind, snr_db):
    speech = _speech_like(8000)
    rng = np.random.default_rng(1)
    pool = [_speech_like(5000 + 700 * i, seed=i) for i in range(1, 7)]
    noise = make_noise(kind, len(speech), rng, babble_pool=pool, talkers=4)
    noisy = mix_at_snr(speech, noise, snr_db)
    assert noisy.shape == speech.shape and noisy.dtype == np.float32
    assert abs(_snr_db(speech, noisy) - snr_db) < SNR_TOLERANCE_DB
    assert abs(_snr_db(speech, noisy) - snr_db) < 1e-3  # in fact exact up to float32 rounding


@pytest.mark.parametrize("noise_length", [999, 8000, 20000])  # looped, equal, cropped
def test_mix_hits_snr_whatever_the_noise_length(noise_length):
    speech = _speech_like(8000)
    noise = white_noise(noise_length, np.random.default_rng(3))
    noisy = mix_at_snr(speech, noise, 3.0)
    assert noisy.shape == (8000,)
    assert abs(_snr_db(speech, noisy) - 3.0) < SNR_TOLERANCE_DB


def test_snr_power_is_measured_on_the_whole_speech_including_silence():
    # Half silence, half speech: the documented definition counts all samples, so the SNR over the active
    # half is 10*log10(2) = 3.01 dB higher than the one requested.
    active = _speech_like(4000)
    speech = np.concatenate([np.zeros(4000, np.float32), active])
    noisy = mix_at_snr(speech, white_noise(8000, np.random.default_rng(4)), 10.0)
    assert abs(_snr_db(speech, noisy) - 10.0) < 1e-3
    added = noisy.astype(np.float64) - speech
    active_snr = 10 * np.log10(np.mean(active.astype(np.float64) ** 2) / np.mean(added[4000:] ** 2))
    # exact: +3.01 dB for the silent half, plus how much of the noise fell on the active half
    expected = 10.0 + 10 * np.log10(2) + 10 * np.log10(np.mean(added**2) / np.mean(added[4000:] ** 2))
    assert abs(active_snr - expected) < 1e-3
    assert 12.8 < active_snr < 13.2  # white noise spreads evenly over both halves


def test_noise_is_looped_from_its_start_and_cropped_to_the_speech():
    assert fit_length(np.array([1.0, 2.0, 3.0]), 7).tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert fit_length(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist() == [1, 2]
    assert fit_length(np.array([1.0, 2.0, 3.0]), 4, offset=2).tolist() == [3, 1, 2, 3]
    speech = np.ones(7, np.float32)
    added = mix_at_snr(speech, np.array([1.0, -1.0, 2.0]), 0.0) - speech
    # scaled copy of [1, -1, 2, 1, -1, 2, 1]: the shape of the pattern survives, only its scale changes
    np.testing.assert_allclose(added / added[0], [1, -1, 2, 1, -1, 2, 1], rtol=1e-5)


def test_silent_speech_is_returned_unchanged_and_silent_noise_is_refused():
    silence = np.zeros(100, np.float32)
    np.testing.assert_array_equal(mix_at_snr(silence, white_noise(100, np.random.default_rng(0)), 5.0), silence)
    with pytest.raises(NoiseError, match="noise is silent"):
        mix_at_snr(_speech_like(100), np.zeros(50), 5.0)
    with pytest.raises(NoiseError, match=r"speech must be a non-empty 1-D waveform, got shape \(2, 50\)"):
        mix_at_snr(np.ones((2, 50)), np.ones(50), 5.0)


def _octave_band_powers(signal: np.ndarray, first_bin: int = 256, octaves: int = 6) -> np.ndarray:
    spectrum = np.abs(np.fft.rfft(signal.astype(np.float64))) ** 2
    return np.array([spectrum[first_bin << k : first_bin << (k + 1)].sum() for k in range(octaves)])


def _octave_slope(signal: np.ndarray) -> float:
    """Slope of log2(power per octave) against octave number: 0 for 1/f noise, 1 for white noise."""
    powers = _octave_band_powers(signal)
    return float(np.polyfit(np.arange(len(powers)), np.log2(powers), 1)[0])


def test_pink_noise_has_equal_power_per_octave_and_white_noise_doubles_it():
    n = 1 << 16
    pink = pink_noise(n, np.random.default_rng(5))
    white = white_noise(n, np.random.default_rng(5))
    assert pink.shape == (n,) and pink.dtype == np.float32
    assert abs(np.sqrt(np.mean(pink.astype(np.float64) ** 2)) - 1.0) < 1e-4
    assert abs(_octave_slope(pink) - 0.0) < 0.1
    assert abs(_octave_slope(white) - 1.0) < 0.1


def test_babble_equalises_the_power_of_its_talkers():
    n = 16000
    loud, quiet = _tone(500, n, amplitude=100.0), _tone(1500, n, amplitude=0.01)
    mixture = babble([loud, quiet], n, np.random.default_rng(6), talkers=2)
    assert mixture.shape == (n,) and mixture.dtype == np.float32
    assert abs(np.sqrt(np.mean(mixture.astype(np.float64) ** 2)) - 1.0) < 1e-4
    spectrum = np.abs(np.fft.rfft(mixture)) ** 2
    # 1 Hz per bin over one second: each tone sits in its own bin
    assert spectrum[500] == pytest.approx(spectrum[1500], rel=1e-3)
    assert spectrum[500] + spectrum[1500] == pytest.approx(spectrum.sum(), rel=1e-3)


def test_babble_needs_enough_talkers():
    with pytest.raises(NoiseError, match="needs at least 3 utterances, got 2"):
        babble([np.ones(10), np.ones(10)], 10, np.random.default_rng(0), talkers=3)


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_mixing_is_deterministic_under_a_seed(kind):
    speech = _speech_like(4000)
    pool = [_speech_like(3000, seed=i) for i in range(4)]

    def mixed(seed, key):
        return mix_at_snr(speech, make_noise(kind, len(speech), utterance_rng(seed, key), pool, talkers=3), 5.0)

    first, again = mixed(42, "s1/bbaf2n"), mixed(42, "s1/bbaf2n")
    other_utterance, other_seed = mixed(42, "s1/bbaf3s"), mixed(43, "s1/bbaf2n")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other_utterance)
    assert not np.allclose(first, other_seed)


def test_unknown_kind_is_refused():
    with pytest.raises(NoiseError, match="unknown noise kind 'brown'"):
        make_noise("brown", 10, np.random.default_rng(0))
