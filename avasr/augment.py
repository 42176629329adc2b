"""Training-time augmentation of a padded Batch: noise in the waveform, SpecAugment masks, blanked lip frames and
modality dropout, each switched on by its Config field (all off by default).

Per utterance, in this order:
1. noise (probability `noise_prob`): a kind drawn from `noise_kinds`, an SNR drawn uniformly from `noise_snr_db`,
   mixed into the clean speech as evaluation mixes it (avasr.data.noisy_speech); the log-mel is then recomputed.
   Babble comes from other training speakers (a streamed training set: a sample of BABBLE_VOICES of them). This
   needs the training set loaded (or streamed) with keep_speech;
2. a frequency warp (`freq_warp`): the log-mel's bands resampled at a factor drawn from 1 -/+ freq_warp and
   standardised again, so formants sit higher or lower than the voice put them (vocal tract length perturbation);
3. a time warp (`time_warp`): SpecAugment's, on the log-mel and the lips alike (`warp_time`), so they stay in sync;
4. `freq_masks` frequency masks and `audio_time_masks` time masks on the log-mel, `video_time_masks` on the lips;
5. modality dropout (probability `modality_dropout`): audio or video, equally likely, blanked whole. Only an
   utterance with both streams loses one: an audio-only one (no face) keeps its audio.
Masked and blanked values are zeros, the mean of standardised features: what `modalities` blanking feeds too.

All draws come from the Generator passed per batch; `fit` seeds one per epoch from (seed, epoch), so an epoch's
augmentation is the same however the run got there (a resumed run continues it exactly).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from avasr.config import AUDIO_TIME_DOWNSAMPLING, AUDIO_VISUAL, Config
from avasr.data.audio import standardise_bands
from avasr.data.dataset import AVDataset, Batch
from avasr.data.mixing import DEFAULT_BABBLE_TALKERS
from avasr.data.noisy_speech import checked_pools, mixed_speech, speech_features
from avasr.data.streaming import StreamingDataset
from avasr.errors import AvasrError

# Babble voices a streamed training set holds in memory (about 50 MB of 3 s utterances); an in-memory one uses all
# of its speech, which it holds anyway.
BABBLE_VOICES = 256
BLANK_AUDIO_FIRST = 0.5  # modality dropout: the chance that the audio (not the video) is the stream blanked


class AugmentError(AvasrError, ValueError):
    """Augmentation that cannot run on the data given (e.g. noise without the speech it is mixed into)."""


class Augmenter:
    """`augmenter(batch, rng)` -> an augmented copy of the batch (see the module docstring)."""

    def __init__(self, config: Config, train_set: AVDataset | StreamingDataset):
        self.config = config
        self.babble: dict[str, Sequence[np.ndarray]] = {}  # utterance id -> the voices its babble is drawn from
        if config.noise_prob == 0:
            return
        if not train_set.keeps_speech:
            raise AugmentError(
                "noise_prob > 0 mixes noise into the speech: load (or stream) the training set with keep_speech=True"
            )
        if "babble" in config.noise_kinds:
            members = train_set.members
            pools = checked_pools(members, train_set.speech_sample(BABBLE_VOICES, config.seed), DEFAULT_BABBLE_TALKERS)
            self.babble = {utterance_id: pool for (utterance_id, _), pool in zip(members, pools)}

    @property
    def active(self) -> bool:
        c = self.config
        masks = c.freq_masks or c.audio_time_masks or c.video_time_masks
        return bool(c.noise_prob or c.freq_warp or c.time_warp or masks or c.modality_dropout)

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        audio, video = batch.audio.clone(), batch.video.clone()  # (B, 1, n_mels, T_a), (B, T_v, 1, H, W)
        for i in range(len(batch.ids)):
            frames = int(batch.video_lengths[i])
            if self.config.noise_prob and rng.random() < self.config.noise_prob:
                audio[i, 0, :, : AUDIO_TIME_DOWNSAMPLING * frames] = self.noisy_features(batch, i, frames, rng)
            if self.config.freq_warp:
                factor = rng.uniform(1 - self.config.freq_warp, 1 + self.config.freq_warp)
                valid = audio[i, 0, :, : AUDIO_TIME_DOWNSAMPLING * frames]
                audio[i, 0, :, : AUDIO_TIME_DOWNSAMPLING * frames] = warp_bands(valid, factor)
            if self.config.time_warp:
                warp_time(audio[i, 0], video[i], frames, self.config.time_warp, rng)
            self.mask(audio[i, 0], video[i], frames, rng)
            if batch.streams[i] == AUDIO_VISUAL and rng.random() < self.config.modality_dropout:
                (audio if rng.random() < BLANK_AUDIO_FIRST else video)[i] = 0.0
        return batch._replace(audio=audio, video=video)

    def noisy_features(self, batch: Batch, i: int, frames: int, rng: np.random.Generator) -> torch.Tensor:
        """Row i's log-mel in a random noise at a random SNR. shape = (n_mels, AUDIO_TIME_DOWNSAMPLING * frames)"""
        if not batch.speech:
            raise AugmentError("noise_prob > 0 but the batch holds no speech: load the training set with keep_speech")
        kinds, (low, high) = self.config.noise_kinds, self.config.noise_snr_db
        kind, snr_db = kinds[rng.integers(len(kinds))], rng.uniform(low, high)
        pool = self.babble.get(batch.ids[i], ())
        talkers = min(DEFAULT_BABBLE_TALKERS, len(pool)) if kind == "babble" else DEFAULT_BABBLE_TALKERS
        speech = mixed_speech(batch.speech[i], batch.ids[i], kind, snr_db, rng, pool, talkers)
        return speech_features(speech, frames, self.config)

    def mask(self, mel: torch.Tensor, lips: torch.Tensor, frames: int, rng: np.random.Generator) -> None:
        """In place: mel shape = (n_mels, T_a), lips shape = (T_v, 1, H, W); only the first `frames` are real."""
        c = self.config
        for _ in range(c.freq_masks):
            start, width = span(mel.shape[0], c.freq_mask_bands, rng)
            mel[start : start + width] = 0.0
        for _ in range(c.audio_time_masks):
            start, width = span(AUDIO_TIME_DOWNSAMPLING * frames, AUDIO_TIME_DOWNSAMPLING * c.time_mask_frames, rng)
            mel[:, start : start + width] = 0.0
        for _ in range(c.video_time_masks):
            start, width = span(frames, c.time_mask_frames, rng)
            lips[start : start + width] = 0.0


def warp_bands(mel: torch.Tensor, factor: float) -> torch.Tensor:
    """Band f takes the log-mel at band f / factor (linear interpolation, the edge bands repeated beyond the edges),
    then every band is standardised again as log_mel leaves it: a factor above 1 moves the formants up. The warp is
    linear on the mel axis (VTLP's is linear in Hz). shape = (n_mels, T_a) -> the same."""
    bands = mel.shape[0]
    source = (torch.arange(bands, dtype=mel.dtype) / factor).clamp(0, bands - 1)  # (n_mels,)
    return standardise_bands(interpolate(mel, source, dim=0))


def warp_time(mel: torch.Tensor, lips: torch.Tensor, frames: int, max_shift: int, rng: np.random.Generator) -> None:
    """In place, SpecAugment's time warp on both streams: a video frame `centre` drawn from inside the utterance moves
    to centre + shift, shift drawn from -max_shift..max_shift; the time before it is stretched and the time after
    squeezed linearly (or the reverse), the first and last frames stay. The log-mel is interpolated linearly, the
    lips take the nearest source frame. Utterances shorter than 2 * max_shift + 2 frames are left alone.
    mel shape = (n_mels, T_a), lips shape = (T_v, 1, H, W); only the first `frames` video frames are real."""
    if frames < 2 * max_shift + 2:
        return
    centre = int(rng.integers(max_shift + 1, frames - max_shift - 1, endpoint=True))
    shift = int(rng.integers(-max_shift, max_shift, endpoint=True))
    if shift == 0:
        return
    steps = AUDIO_TIME_DOWNSAMPLING
    source = warp_positions(steps * frames, steps * centre, steps * shift)  # (T_a,) where each mel frame comes from
    mel[:, : steps * frames] = interpolate(mel[:, : steps * frames], source, dim=1)
    lips[:frames] = lips[warp_positions(frames, centre, shift).round().long()]  # indexing copies


def interpolate(values: torch.Tensor, source: torch.Tensor, dim: int) -> torch.Tensor:
    """`values` read at the fractional positions `source` (within 0..size - 1) along `dim`, linearly between the two
    neighbours. shape = values' with `dim` of len(source)."""
    below = source.floor().long()
    above = (below + 1).clamp(max=values.shape[dim] - 1)
    shape = [1] * values.dim()
    shape[dim] = -1
    weight = (source - below).to(values.dtype).reshape(shape)  # broadcast along `dim`
    return (1 - weight) * values.index_select(dim, below) + weight * values.index_select(dim, above)


def warp_positions(length: int, centre: int, shift: int) -> torch.Tensor:
    """For each of `length` output positions, the source position it reads: linear pieces taking 0 to 0, centre +
    shift to centre and length - 1 to length - 1. shape = (length,) float64."""
    positions = np.interp(np.arange(length), [0, centre + shift, length - 1], [0, centre, length - 1])
    return torch.from_numpy(positions)


def span(length: int, max_width: int, rng: np.random.Generator) -> tuple[int, int]:
    """A random (start, width): width uniform in 0..min(max_width, length), the span inside 0..length."""
    width = int(rng.integers(min(max_width, length) + 1))
    return int(rng.integers(length - width + 1)), width
