"""Noise signals and their mixing at a chosen signal-to-noise ratio: white, pink and babble, deterministic under a
numpy Generator. Which utterances get which noise (evaluation conditions, training augmentation) is elsewhere:
`avasr.data.noisy_speech` and `avasr.augment`.

Every waveform here is `shape = (N,)`, float, all at one sample rate (the caller's; nothing here depends on it).

SNR definition (used by `mix_at_snr` and checked by the tests):

    SNR_dB = 10 * log10( mean(speech**2) / mean(scaled_noise**2) )

Both powers are mean squares over *all* N samples of the speech's length: leading and trailing silences count.
So on a clip that is half silence the SNR over its active speech is about 3 dB higher than the nominal one.
We accept that bias because the definition is exact, needs no voice-activity threshold, and is the same for
training augmentation and for evaluation at fixed SNRs.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from avasr.config import NOISE_KINDS
from avasr.errors import AvasrError

DEFAULT_BABBLE_TALKERS = 6  # enough overlapping voices that no single word is intelligible
_EPSILON_POWER = 1e-20  # below this mean square a signal counts as silent


class NoiseError(AvasrError, ValueError):
    """Noise cannot be built or mixed as asked (silent noise, too few babble talkers, wrong shapes)."""


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so that the mixture has `snr_db` (definition in the module docstring).

    speech: shape = (N,); noise: shape = (M,), looped when M < N and cropped to its first N samples otherwise.
    Returns shape = (N,) float32. The result is not clipped: clipping would change the SNR that was asked for.
    Silent speech comes back unchanged: relative to no signal, any finite SNR means no noise.
    """
    speech, noise = _as_signal(speech, "speech"), _as_signal(noise, "noise")
    noise = fit_length(noise, len(speech))
    speech_power = _power(speech)
    noise_power = _power(noise)
    if noise_power < _EPSILON_POWER:
        raise NoiseError("noise is silent: no scaling of it reaches a finite SNR")
    scale = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (speech + scale * noise).astype(np.float32)


def fit_length(signal: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Loop or crop `signal` to `n` samples, starting at `offset` (circularly). shape = (n,)"""
    indices = (offset + np.arange(n)) % len(signal)
    return signal[indices]


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise, unit variance (flat power spectrum). shape = (n,) float32"""
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f ("pink") noise, unit RMS. shape = (n,) float32

    Made by FFT shaping: the rFFT of Gaussian white noise is multiplied by 1/sqrt(f) (power, the square of the
    amplitude, then falls as 1/f: equal power in every octave), the DC bin is zeroed (1/f is infinite there),
    and the inverse rFFT is rescaled to unit RMS.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    frequencies = np.arange(len(spectrum), dtype=np.float64)  # bin index: proportional to frequency
    gain = np.zeros_like(frequencies)
    gain[1:] = 1.0 / np.sqrt(frequencies[1:])
    pink = np.fft.irfft(spectrum * gain, n=n)
    return _unit_rms(pink, "pink noise").astype(np.float32)


def babble(
    waveforms: Sequence[np.ndarray],
    n: int,
    rng: np.random.Generator,
    talkers: int = DEFAULT_BABBLE_TALKERS,
) -> np.ndarray:
    """Sum of `talkers` utterances drawn without replacement from `waveforms`, each equalised to unit RMS, each
    looped to `n` samples from a random offset; the sum is scaled to unit RMS. shape = (n,) float32

    Pass utterances of speakers other than the one being corrupted (`avasr.data.noisy_speech.pools_from_voices`).
    """
    if talkers < 1:
        raise NoiseError(f"babble needs at least one talker, got talkers={talkers}")
    if len(waveforms) < talkers:
        raise NoiseError(f"babble with {talkers} talkers needs at least {talkers} utterances, got {len(waveforms)}")
    chosen = rng.choice(len(waveforms), size=talkers, replace=False)
    mixture = np.zeros(n, dtype=np.float64)
    for index in chosen:
        voice = _as_signal(waveforms[index], f"babble utterance {index}")
        offset = int(rng.integers(len(voice)))
        mixture += _unit_rms(fit_length(voice, n, offset), f"babble utterance {index}")
    return _unit_rms(mixture, "babble").astype(np.float32)


def make_noise(
    kind: str,
    n: int,
    rng: np.random.Generator,
    babble_pool: Sequence[np.ndarray] = (),
    talkers: int = DEFAULT_BABBLE_TALKERS,
) -> np.ndarray:
    """Noise of one of `NOISE_KINDS`. shape = (n,) float32"""
    if kind == "white":
        return white_noise(n, rng)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "babble":
        return babble(babble_pool, n, rng, talkers)
    raise NoiseError(f"unknown noise kind {kind!r} (known: {', '.join(NOISE_KINDS)})")


def utterance_rng(seed: int, key: str) -> np.random.Generator:
    """A Generator that depends only on (seed, key): the same utterance gets the same noise whatever the order
    of evaluation, the number of workers or the model being evaluated."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def _as_signal(signal: np.ndarray, name: str) -> np.ndarray:
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1 or signal.size == 0:
        raise NoiseError(f"{name} must be a non-empty 1-D waveform, got shape {signal.shape}")
    return signal


def _power(signal: np.ndarray) -> float:
    return float(np.mean(np.square(signal, dtype=np.float64)))


def _unit_rms(signal: np.ndarray, name: str) -> np.ndarray:
    power = _power(signal)
    if power < _EPSILON_POWER:
        raise NoiseError(f"{name} is silent: cannot scale it to unit power")
    return signal / np.sqrt(power)
