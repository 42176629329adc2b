"""Audio front end: WAV -> mono -> 16 kHz -> 40-dim log-mel -> per-utterance normalisation.

Output shape = (n_mels, T_a) at 100 frames/s (hop 10 ms). torchaudio >= 2.9 no longer reads files, so soundfile does.
A segment (start, end) in seconds reads only that part of the file (a manifest line with offsets, avasr.data.manifest);
a segment running past the end of the file is cut at the end, one that starts after it is an error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from avasr.config import Config
from avasr.data.manifest import segment_text
from avasr.errors import AvasrError

LOG_FLOOR = 1e-6  # added before the log so silent frames stay finite
NORM_EPS = 1e-5  # keeps per-utterance standardisation finite on constant input


class AudioError(AvasrError, ValueError):
    """An unreadable, corrupt or unusable audio file; the message names it."""


def read_waveform(path: str | Path, segment: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """Read any soundfile-supported file (or its `segment`, seconds) and average its channels. shape = (N,) float32."""
    try:
        with sf.SoundFile(str(path)) as f:
            start, stop = _segment_samples(path, segment, f.samplerate, f.frames)
            f.seek(start)
            samples, rate = f.read(stop - start, dtype="float32", always_2d=True), f.samplerate  # (N, channels)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"{path}: cannot read audio: {e}") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: audio has no samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    return samples.mean(axis=1), rate


def _segment_samples(path, segment: tuple[float, float] | None, rate: int, frames: int) -> tuple[int, int]:
    """The samples [start, stop) of `segment` in a file of `frames` samples at `rate`; all of them when None."""
    if segment is None:
        return 0, frames
    start, stop = round(segment[0] * rate), min(frames, round(segment[1] * rate))
    if start >= frames:
        raise AudioError(
            f"{path}: segment {segment_text(segment)} s starts after the audio ends ({frames / rate:.2f} s)"
        )
    return start, stop


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> torch.Tensor:
    """shape = (N,) -> (N * target_rate / source_rate,), torchaudio's band-limited sinc resampler."""
    signal = torch.from_numpy(np.ascontiguousarray(waveform))
    if source_rate == target_rate:
        return signal
    return torchaudio.functional.resample(signal, source_rate, target_rate)


@lru_cache(maxsize=4)
def _mel_transform(sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop_length, n_mels=n_mels
    )


def log_mel(waveform: torch.Tensor, config: Config) -> torch.Tensor:
    """shape = (N,) at config.sample_rate -> (n_mels, N // hop + 1), standardised per utterance and per band."""
    mel = _mel_transform(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)(waveform)
    return standardise_bands(torch.log(mel + LOG_FLOOR))  # (n_mels, T_a)


def standardise_bands(features: torch.Tensor) -> torch.Tensor:
    """Each band to mean 0 and SD 1 over the utterance: a channel's fixed colouring (a gain per band) is gone.
    shape = (n_mels, T_a) -> the same."""
    mean = features.mean(dim=1, keepdim=True)
    std = features.std(dim=1, keepdim=True)
    return (features - mean) / (std + NORM_EPS)


def load_speech(path: str | Path, config: Config, segment: tuple[float, float] | None = None) -> torch.Tensor:
    """File (or its `segment`) -> mono speech at config.sample_rate. shape = (N,) float32; at least one analysis
    window long."""
    waveform, rate = read_waveform(path, segment)
    if len(waveform) < config.n_fft:
        raise AudioError(f"{path}: {len(waveform)} samples is shorter than one {config.window_ms} ms window")
    return resample(waveform, rate, config.sample_rate)


def load_log_mel(path: str | Path, config: Config, segment: tuple[float, float] | None = None) -> torch.Tensor:
    """File (or its `segment`) -> log-mel features. shape = (n_mels, T_a) float32 at config.mel_frames_per_second."""
    return log_mel(load_speech(path, config, segment), config)
