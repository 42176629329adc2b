"""Utterances in memory and the named batch the model trains on.

Loading policy (documented skips, counted and reported; everything else is an error naming the file):
- a video in which no face is found at all is skipped (`no_face`): a centre crop is never passed off as lips;
- an utterance with fewer fused frames than CTC needs (labels + adjacent repeats) is skipped (`too_short`),
  because its loss would be infinite.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from avasr.config import AUDIO_TIME_DOWNSAMPLING, LIP_PIXEL_MEAN, LIP_PIXEL_STD, Config
from avasr.data.audio import AudioError, log_mel
from avasr.data.cache import FeatureCache, Features, compute_features
from avasr.data.lips import NoFaceError
from avasr.data.manifest import ManifestEntry, read_manifest
from avasr.data.noisy import NoiseSpec, noisy_waveforms
from avasr.data.video import VideoError
from avasr.errors import AvasrError
from avasr.text import encode

MAX_AV_MISMATCH_SECONDS = 0.25  # audio and video of one clip may differ by this much; more means a broken pair
PIXEL_MAX = 255.0
MIN_UTTERANCES_PER_WORKER = 16  # below this, starting worker processes costs more than it saves


class DataError(AvasrError, ValueError):
    """Unusable files in a manifest; the message lists every one with its manifest line."""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: torch.Tensor  # shape = (n_mels, AUDIO_TIME_DOWNSAMPLING * T_v) float32, standardised log-mel
    video: torch.Tensor  # shape = (T_v, lip_size, lip_size) uint8 lip crops
    targets: torch.Tensor  # shape = (L,) int64 label ids
    transcript: str


class Batch(NamedTuple):
    audio: torch.Tensor  # (B, 1, n_mels, T_a) float32, T_a = AUDIO_TIME_DOWNSAMPLING * T_v
    audio_lengths: torch.Tensor  # (B,) int64 mel frames
    video: torch.Tensor  # (B, T_v, 1, lip_size, lip_size) float32, standardised pixels
    video_lengths: torch.Tensor  # (B,) int64 video frames = output frames of the model
    targets: torch.Tensor  # (B, L_max) int64, padded with 0 beyond target_lengths
    target_lengths: torch.Tensor  # (B,) int64
    transcripts: list[str]
    ids: list[str]

    def keep_modalities(self, modalities: str) -> "Batch":
        """Blank the stream that `modalities` leaves out (zeros = the mean of standardised features)."""
        if modalities == "audio+video":
            return self
        audio, video = keep_modalities(self.audio, self.video, modalities)
        return self._replace(audio=audio, video=video)

    def to(self, device: torch.device | str) -> "Batch":
        return self._replace(**{k: v.to(device) for k, v in self._asdict().items() if torch.is_tensor(v)})


@dataclass
class LoadReport:
    loaded: int = 0
    skipped: dict[str, list[str]] = field(default_factory=lambda: {"no_face": [], "too_short": []})

    def summary(self) -> str:
        parts = [f"{self.loaded} utterances loaded"]
        for reason, where in self.skipped.items():
            if where:
                shown = ", ".join(where[:5]) + (" ..." if len(where) > 5 else "")
                parts.append(f"{len(where)} skipped ({reason}): {shown}")
        return "; ".join(parts)


def keep_modalities(audio: torch.Tensor, video: torch.Tensor, modalities: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs with the stream `modalities` leaves out blanked (zeros = the mean of standardised features):
    what a model trained on "audio" or "video" alone saw in training, at evaluation and at inference alike."""
    if modalities == "audio":
        return audio, torch.zeros_like(video)
    if modalities == "video":
        return torch.zeros_like(audio), video
    return audio, video


def ctc_min_frames(labels: Sequence[int]) -> int:
    """Frames CTC needs for a label sequence: one per label plus a blank between adjacent repeats."""
    repeats = sum(1 for a, b in zip(labels, labels[1:]) if a == b)
    return len(labels) + repeats


def lip_crops_to_tensor(crops: torch.Tensor) -> torch.Tensor:
    """uint8 crops -> standardised float. shape = (..., H, W) -> same shape; used by training and inference."""
    return (crops.float() / PIXEL_MAX - LIP_PIXEL_MEAN) / LIP_PIXEL_STD


def align_audio_to_video(mel: torch.Tensor, video_frames: int, config: Config) -> torch.Tensor:
    """Make the mel sequence exactly AUDIO_TIME_DOWNSAMPLING frames per video frame.

    shape = (n_mels, T_a) -> (n_mels, AUDIO_TIME_DOWNSAMPLING * video_frames). At the default rates (100 Hz mel,
    25 fps) this trims or zero-pads a few frames; at other rates (e.g. fps = 30) it interpolates in time.
    """
    target = AUDIO_TIME_DOWNSAMPLING * video_frames
    if config.mel_frames_per_second == AUDIO_TIME_DOWNSAMPLING * config.fps:
        return F.pad(mel, (0, max(0, target - mel.shape[1])))[:, :target]
    return F.interpolate(mel[None], size=target, mode="linear", align_corners=False)[0]  # (1, n_mels, T) -> ...


def check_durations(mel_frames: int, video_frames: int, config: Config, audio_path, video_path) -> None:
    """Raise VideoError naming both files when audio and video differ by more than MAX_AV_MISMATCH_SECONDS."""
    audio_seconds = (mel_frames - 1) / config.mel_frames_per_second  # centred STFT: N // hop + 1 frames
    video_seconds = video_frames / config.fps
    if abs(audio_seconds - video_seconds) > MAX_AV_MISMATCH_SECONDS:
        raise VideoError(
            f"{video_path}: video lasts {video_seconds:.2f} s but its audio {audio_path} lasts "
            f"{audio_seconds:.2f} s (tolerance {MAX_AV_MISMATCH_SECONDS} s)"
        )


def load_features(entry: ManifestEntry, config: Config) -> Features:
    """The clean log-mel and lip crops, through the cache when `config.cache_dir` is set."""
    return FeatureCache(config.cache_dir, config).get(entry) if config.cache_dir else compute_features(entry, config)


def load_utterance(entry: ManifestEntry, config: Config, waveform: np.ndarray | None = None) -> Utterance:
    """Featurise and align one manifest entry.

    waveform: shape = (N,) at config.sample_rate, as long as the entry's resampled audio (noisy speech): its
    log-mel replaces the audio file's; the lip crops are the clean ones all the same.
    Raises AudioError / VideoError / NoFaceError naming the file.
    """
    features = load_features(entry, config)
    mel = features.mel if waveform is None else log_mel(torch.from_numpy(waveform), config)  # (n_mels, T_a)
    crops = features.crops  # (T_v, lip_size, lip_size)
    check_durations(mel.shape[1], crops.shape[0], config, entry.audio_path, entry.video_path)
    return Utterance(
        id=entry.utterance_id,
        audio=align_audio_to_video(mel, crops.shape[0], config),
        video=crops,
        targets=torch.tensor(encode(entry.transcript), dtype=torch.long),
        transcript=entry.transcript,
    )


def _load_or_error(job: tuple[ManifestEntry, Config, np.ndarray | None]) -> Utterance | Exception:
    """Pool-friendly: data errors come back as values so one bad file does not hide the others."""
    try:
        return load_utterance(*job)
    except (AudioError, VideoError) as e:  # NoFaceError is a VideoError
        return e
    except OSError as e:  # a file that vanished or became unreadable after the manifest was checked
        return VideoError(f"cannot read {e.filename}: {e.strerror}" if e.filename else str(e))


def load_all(entries: list[ManifestEntry], config: Config, desc: str, progress: bool,
             waveforms: Sequence[np.ndarray] | None = None) -> list[Utterance | Exception]:
    """Load entries in order, in `config.data_workers` processes (0 = all cores) when there is enough work.

    waveforms: one per entry, replacing the audio files' (see `load_utterance`).
    """
    workers = min(config.data_workers or os.cpu_count() or 1, len(entries))
    waveforms = [None] * len(entries) if waveforms is None else waveforms
    jobs = [(e, config, w) for e, w in zip(entries, waveforms)]
    bar = dict(total=len(jobs), desc=desc, unit="utt", disable=not progress)
    if workers <= 1 or len(jobs) < MIN_UTTERANCES_PER_WORKER * 2:
        return [_load_or_error(j) for j in tqdm(jobs, **bar)]
    # spawn, not fork: forking a process whose torch/OpenMP threads are running can deadlock
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(_load_or_error, jobs, chunksize=MIN_UTTERANCES_PER_WORKER // 4), **bar))


class AVDataset(Dataset):
    """Utterances held in memory (lip crops as uint8). Build it with `from_manifest`; with `noise`, each
    utterance's speech is mixed with that noise before its log-mel (avasr.data.noisy), the lip crops stay clean."""

    def __init__(self, utterances: list[Utterance], report: LoadReport | None = None):
        self.utterances = utterances
        self.report = report or LoadReport(loaded=len(utterances))

    @classmethod
    def from_manifest(cls, path, config: Config, progress: bool = True,
                      noise: NoiseSpec | None = None) -> "AVDataset":
        entries = read_manifest(path)
        waveforms = noisy_waveforms(entries, noise, config, progress) if noise else None
        report, utterances, errors = LoadReport(), [], []
        loads = load_all(entries, config, f"loading {Path(path).name}", progress, waveforms)
        for entry, loaded in zip(entries, loads):
            if isinstance(loaded, NoFaceError):
                report.skipped["no_face"].append(f"{entry.where} ({loaded})")
            elif isinstance(loaded, Exception):
                errors.append(f"{entry.where}: {loaded}")
            elif loaded.video.shape[0] < ctc_min_frames(loaded.targets.tolist()):
                needed = ctc_min_frames(loaded.targets.tolist())
                report.skipped["too_short"].append(f"{loaded.id} ({loaded.video.shape[0]} frames < {needed} needed)")
            else:
                utterances.append(loaded)
        if errors:
            raise DataError(f"{path}: {len(errors)} unusable utterance(s):\n" + "\n".join(f"  {e}" for e in errors))
        report.loaded = len(utterances)
        if not utterances:
            raise DataError(f"{path}: no usable utterances ({report.summary()})")
        return cls(utterances, report)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> Utterance:
        return self.utterances[index]


def collate(utterances: Sequence[Utterance]) -> Batch:
    """Pad a list of utterances into a Batch (zeros beyond each length)."""
    video_lengths = torch.tensor([u.video.shape[0] for u in utterances])
    target_lengths = torch.tensor([len(u.targets) for u in utterances])
    t_video, n_labels = int(video_lengths.max()), int(target_lengths.max())
    n_mels, size = utterances[0].audio.shape[0], utterances[0].video.shape[-1]
    audio = torch.zeros(len(utterances), 1, n_mels, AUDIO_TIME_DOWNSAMPLING * t_video)  # (B, 1, n_mels, T_a)
    video = torch.zeros(len(utterances), t_video, 1, size, size)  # (B, T_v, 1, H, W)
    targets = torch.zeros(len(utterances), n_labels, dtype=torch.long)  # (B, L_max)
    for i, u in enumerate(utterances):
        audio[i, 0, :, : u.audio.shape[1]] = u.audio
        video[i, : u.video.shape[0], 0] = lip_crops_to_tensor(u.video)
        targets[i, : len(u.targets)] = u.targets
    return Batch(
        audio=audio,
        audio_lengths=video_lengths * AUDIO_TIME_DOWNSAMPLING,
        video=video,
        video_lengths=video_lengths,
        targets=targets,
        target_lengths=target_lengths,
        transcripts=[u.transcript for u in utterances],
        ids=[u.id for u in utterances],
    )
