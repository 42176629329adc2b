"""A dataset's speech in noise: a noise condition (`NoiseSpec`), babble drawn from other speakers, and the noisy
copy of a dataset that evaluation at a fixed SNR decodes. Training augmentation (avasr.augment) uses the same babble
pools and the same mixing (avasr.data.mixing).

The noise is a function of (seed, utterance id) only (`avasr.data.mixing.utterance_rng`): the same utterance gets
the same noise whatever the model, the order of loading or the number of workers, so WERs of two models at one
SNR and seed are measured on identical inputs. Only the log-mel changes: the lip crops are the clean dataset's.

Babble for an utterance is drawn from the OTHER utterances of the same dataset, never from its own speaker. The
speaker is the utterance's parent folder (the built-in corpus and GRID store one folder per speaker). When the
whole dataset lives in one folder the folder says nothing about speakers: babble then comes from every other
utterance. A pool smaller than `NoiseSpec.talkers` babbles with all of it (fewer, more intelligible voices: an
easier test) and a warning says how many utterances that concerned.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avasr.config import Config
from avasr.data.audio import log_mel
from avasr.data.dataset import AVDataset, Utterance
from avasr.data.mixing import DEFAULT_BABBLE_TALKERS, NOISE_KINDS, NoiseError, make_noise, mix_at_snr, utterance_rng
from avasr.features import align_audio_to_video


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


Voice = tuple[str, str, np.ndarray]  # (utterance id, speaker, speech shape = (N,)): what babble is made of


def pools_from_voices(members: Sequence[tuple[str, str]], voices: Sequence[Voice]) -> list[Sequence[np.ndarray]]:
    """For each member (utterance id, speaker), the `voices` its babble may be drawn from: those of other speakers,
    or, when every member and voice comes from one folder, every voice but the member's own utterance. The voices
    may be the members' own (a dataset in memory) or a sample of them (a streamed one)."""
    # Digital silence around a voice would make babble sparser than the voices it is built from.
    trimmed = [(i, s, np.trim_zeros(np.asarray(v))) for i, s, v in voices]
    trimmed = [(i, s, v) for i, s, v in trimmed if v.size]
    if len({s for _, s in members} | {s for _, s, _ in voices}) == 1:  # one folder: speakers unknown
        return [[v for j, _, v in trimmed if j != i] for i, _ in members]
    others = {speaker: [v for _, s, v in trimmed if s != speaker] for speaker in {s for _, s in members}}
    return [others[speaker] for _, speaker in members]


def noisy_dataset(dataset: AVDataset, spec: NoiseSpec, config: Config) -> AVDataset:
    """`dataset` (loaded with keep_speech) with every utterance's log-mel replaced by that of its speech in `spec`'s
    noise (`noisy_waveforms`); lip crops and speech are shared with `dataset`, not copied."""
    noisy = noisy_waveforms(dataset, spec)
    return AVDataset(
        [
            dataclasses.replace(u, audio=speech_features(speech, u.video.shape[0], config))
            for u, speech in zip(dataset.utterances, noisy)
        ],
        dataset.report,
    )


def noisy_waveforms(dataset: AVDataset, spec: NoiseSpec) -> list[np.ndarray]:
    """Every utterance's speech mixed with its noise at exactly `spec.snr_db`. shape = (N_i,) float32 each."""
    missing = [u.id for u in dataset.utterances if u.speech is None]
    if missing:
        raise NoiseError(
            f"noise needs each utterance's speech: load the dataset with keep_speech=True "
            f"({len(missing)} without, e.g. {missing[0]})"
        )
    pools = checked_babble_pools(dataset.utterances, spec.talkers) if spec.kind == "babble" else [()] * len(dataset)
    noisy = []
    for utterance, pool in zip(dataset.utterances, pools):
        talkers = min(spec.talkers, len(pool)) if spec.kind == "babble" else spec.talkers
        rng = utterance_rng(spec.seed, utterance.id)
        noisy.append(mixed_speech(utterance.speech, utterance.id, spec.kind, spec.snr_db, rng, pool, talkers))
    return noisy


def mixed_speech(
    speech: torch.Tensor,
    utterance_id: str,
    kind: str,
    snr_db: float,
    rng: np.random.Generator,
    pool: Sequence[np.ndarray],
    talkers: int,
) -> np.ndarray:
    """`speech` (shape = (N,)) with `kind` noise at `snr_db`. shape = (N,) float32; NoiseError names the utterance."""
    try:
        return mix_at_snr(speech.numpy(), make_noise(kind, len(speech), rng, pool, talkers), snr_db)
    except NoiseError as e:
        raise NoiseError(f"{utterance_id}: {e}") from None


def speech_features(speech: np.ndarray, video_frames: int, config: Config) -> torch.Tensor:
    """The model's audio input for `speech`, aligned to `video_frames`: the shape of the clean utterance's.
    speech shape = (N,) -> (n_mels, AUDIO_TIME_DOWNSAMPLING * video_frames)"""
    return align_audio_to_video(log_mel(torch.from_numpy(speech), config), video_frames, config)


def checked_babble_pools(utterances: Sequence[Utterance], talkers: int) -> list[Sequence[np.ndarray]]:
    """`pools_from_voices` of utterances holding their speech, each its own member and voice, checked as
    `checked_pools` checks."""
    return checked_pools(
        [(u.id, u.speaker) for u in utterances], [(u.id, u.speaker, u.speech.numpy()) for u in utterances], talkers
    )


def checked_pools(
    members: Sequence[tuple[str, str]], voices: Sequence[Voice], talkers: int
) -> list[Sequence[np.ndarray]]:
    """`pools_from_voices`; NoiseError when a member has nobody to draw from, a warning when some have fewer voices
    than `talkers`."""
    pools = pools_from_voices(members, voices)
    alone = [i for (i, _), pool in zip(members, pools) if not pool]
    if alone:
        raise NoiseError(
            f"babble: no utterance of another speaker to draw from for {len(alone)} "
            f"utterance(s): {', '.join(alone[:5])}{' ...' if len(alone) > 5 else ''}"
        )
    thin = [i for (i, _), pool in zip(members, pools) if len(pool) < talkers]
    if thin:
        warnings.warn(
            f"babble: {len(thin)} of {len(members)} utterances ({thin[0]}, ...) have fewer than "
            f"{talkers} utterances of other speakers to draw from and get fewer talkers",
            stacklevel=3,
        )
    return pools
