"""Noisy speech for evaluation at a fixed SNR: each utterance of a manifest mixed with white, pink or babble noise.

The noise is a function of (seed, utterance id) only (`avasr.data.noise.utterance_rng`): the same utterance gets
the same noise whatever the model, the order of loading or the number of workers, so WERs of two models at one
SNR and seed are measured on identical inputs. `AVDataset.from_manifest(..., noise=NoiseSpec(...))` turns these
waveforms into features; the lip crops are the clean pipeline's (from the feature cache when it is set).

Babble for an utterance is drawn from the OTHER utterances of the same manifest, never from its own speaker. The
speaker is the utterance's parent folder (the built-in corpus and GRID store one folder per speaker). When the
whole manifest lives in one folder the folder says nothing about speakers: babble then comes from every other
utterance. A pool smaller than `NoiseSpec.talkers` babbles with all of it (fewer, more intelligible voices: an
easier test) and a warning says how many utterances that concerned.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from avasr.config import Config
from avasr.data.audio import AudioError, read_waveform, resample
from avasr.data.manifest import ManifestEntry
from avasr.data.noise import DEFAULT_BABBLE_TALKERS, NOISE_KINDS, NoiseError, make_noise, mix_at_snr, utterance_rng


@dataclass(frozen=True)
class NoiseSpec:
    """One noise condition: `kind` (white | pink | babble) at `snr_db`, drawn with `seed`."""

    kind: str = "babble"
    snr_db: float = 0.0
    seed: int = 0
    talkers: int = DEFAULT_BABBLE_TALKERS  # babble voices, at most (see the module docstring)

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise NoiseError(f"unknown noise kind {self.kind!r} (known: {', '.join(NOISE_KINDS)})")
        if not math.isfinite(self.snr_db):
            raise NoiseError(f"snr_db must be finite, got {self.snr_db}")
        if self.talkers < 1:
            raise NoiseError(f"babble needs at least one talker, got talkers={self.talkers}")

    def describe(self) -> str:
        return f"{self.kind} noise at {self.snr_db:g} dB SNR (seed {self.seed})"


def babble_sources(entries: Sequence[ManifestEntry]) -> list[list[int]]:
    """For each entry, the indices of the entries its babble may be drawn from (see the module docstring)."""
    speakers = [e.speaker for e in entries]
    if len(set(speakers)) == 1:  # one folder: speakers unknown, so only the utterance itself is left out
        return [[j for j in range(len(entries)) if j != i] for i in range(len(entries))]
    return [[j for j, other in enumerate(speakers) if other != speaker] for speaker in speakers]


def read_speech(entry: ManifestEntry, config: Config) -> np.ndarray:
    """The entry's audio at config.sample_rate, as the clean pipeline resamples it. shape = (N,) float32"""
    try:
        waveform, rate = read_waveform(entry.audio_path)
    except AudioError as e:
        raise AudioError(f"{entry.where}: {e}") from None
    return resample(waveform, rate, config.sample_rate).numpy()


def noisy_waveforms(entries: Sequence[ManifestEntry], spec: NoiseSpec, config: Config,
                    progress: bool = False) -> list[np.ndarray]:
    """Every entry's speech mixed with its noise at exactly `spec.snr_db`. shape = (N_i,) float32 each, N_i the
    length of entry i's speech at config.sample_rate. Raises AudioError / NoiseError naming the manifest line."""
    speech = [read_speech(e, config) for e in tqdm(entries, desc="reading speech", unit="utt", disable=not progress)]
    pools = babble_pools(entries, speech, spec.talkers) if spec.kind == "babble" else [()] * len(entries)
    return [_mix(e, s, spec, pool) for e, s, pool in zip(entries, speech, pools)]


def babble_pools(entries: Sequence[ManifestEntry], speech: Sequence[np.ndarray],
                 talkers: int) -> list[list[np.ndarray]]:
    """For each entry, the voices its babble is drawn from: `speech` (shape = (N_j,) each) of its sources."""
    # Digital silence around a voice would make babble sparser than the voices it is built from.
    voices = [np.trim_zeros(s) for s in speech]
    pools = [[voices[j] for j in sources if voices[j].size] for sources in babble_sources(entries)]
    alone = [e.where for e, pool in zip(entries, pools) if not pool]
    if alone:
        raise NoiseError(f"babble: no utterance of another speaker in the manifest to draw from for {len(alone)} "
                         f"utterance(s): {', '.join(alone[:5])}{' ...' if len(alone) > 5 else ''}")
    thin = [e.where for e, pool in zip(entries, pools) if len(pool) < talkers]
    if thin:
        warnings.warn(f"babble: {len(thin)} of {len(entries)} utterances ({thin[0]}, ...) have fewer than "
                      f"{talkers} utterances of other speakers to draw from and get fewer talkers", stacklevel=3)
    return pools


def _mix(entry: ManifestEntry, speech: np.ndarray, spec: NoiseSpec, pool: Sequence[np.ndarray]) -> np.ndarray:
    talkers = min(spec.talkers, len(pool)) if spec.kind == "babble" else spec.talkers
    try:
        noise = make_noise(spec.kind, len(speech), utterance_rng(spec.seed, entry.utterance_id), pool, talkers)
        return mix_at_snr(speech, noise, spec.snr_db)
    except NoiseError as e:
        raise NoiseError(f"{entry.where}: {entry.audio_path}: {e}") from None
