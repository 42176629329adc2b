"""Utterances in memory and the named batch the model trains on.

Loading policy (documented fallbacks and skips, counted and reported; everything else is an error naming the file):
- a video in which no face is found at all runs on audio alone (`audio_only`, with a warning): its video stream is
  blanked, as modality dropout and `modalities="audio"` blank it, and a centre crop is never passed off as lips.
  A video-only configuration has nothing left to use, so there such an utterance is skipped (`no_face`);
- an utterance with fewer fused frames than CTC needs (labels + adjacent repeats) is skipped (`too_short`),
  because its loss would be infinite;
- the length filter (as torchaudio's AV-ASR example filters LRS3): an utterance of fewer than MIN_VIDEO_FRAMES
  video frames is skipped (`few_frames`), and so is one whose audio runs at other than sample_rate / fps audio
  samples per video frame (640 at 16 kHz and 25 fps) by more than AV_RATE_TOLERANCE (`av_rate`): 560-720 keeps
  clips whose audio and video agree. A pair that differs by more than features.MAX_AV_MISMATCH_SECONDS is no
  length quirk but a broken pair, and stays an error naming its files.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from avasr.config import (
    AUDIO_ONLY,
    AUDIO_TIME_DOWNSAMPLING,
    AUDIO_VISUAL,
    VIDEO_ONLY,
    Config,
)
from avasr.data.audio import AudioError, load_speech
from avasr.data.cache import FeatureCache, Features, compute_features
from avasr.data.index import IndexedManifest, IndexRow, index_manifests
from avasr.data.manifest import ManifestEntry, read_manifest
from avasr.data.pool import in_processes, worker_count
from avasr.data.video import VideoError
from avasr.errors import AvasrError
from avasr.features import (
    align_audio_to_video,
    check_durations,
    ctc_min_frames,
    keep_modalities,
    lip_crops_to_tensor,
    video_frames_of_audio,
)
from avasr.text import encode

LOAD_CHUNK = 4  # utterances per pool job when loading without the cache
MIN_VIDEO_FRAMES = 12  # the length filter's shortest utterance: 0.48 s at 25 fps
AV_RATE_TOLERANCE = 0.125  # audio samples per video frame within 12.5 % of sample_rate / fps: 560-720 at defaults


class DataError(AvasrError, ValueError):
    """Unusable files in a manifest; the message lists every one with its manifest line."""


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str  # the manifest entry's speaker: babble for this utterance comes from other speakers
    audio: torch.Tensor  # shape = (n_mels, AUDIO_TIME_DOWNSAMPLING * T_v) float32, standardised log-mel
    video: torch.Tensor  # shape = (T_v, lip_size, lip_size) uint8 lip crops; unused (zeros) when audio only
    targets: torch.Tensor  # shape = (L,) int64 label ids
    transcript: str
    streams: str = AUDIO_VISUAL  # the streams its files gave: AUDIO_ONLY when its video has no face
    speech: torch.Tensor | None = None  # shape = (N,) float32 clean speech at sample_rate, when asked to keep it
    mel_frames: int = 0  # log-mel frames before alignment to the video (the length filter's audio length); 0: unknown


class Batch(NamedTuple):
    audio: torch.Tensor  # (B, 1, n_mels, T_a) float32, T_a = AUDIO_TIME_DOWNSAMPLING * T_v
    audio_lengths: torch.Tensor  # (B,) int64 mel frames
    video: torch.Tensor  # (B, T_v, 1, lip_size, lip_size) float32, standardised pixels
    video_lengths: torch.Tensor  # (B,) int64 video frames = output frames of the model
    targets: torch.Tensor  # (B, L_max) int64, padded with 0 beyond target_lengths
    target_lengths: torch.Tensor  # (B,) int64
    transcripts: list[str]
    ids: list[str]
    speakers: list[str]
    streams: list[str]  # per row: AUDIO_VISUAL, or AUDIO_ONLY when the video had no face (its row is zeros)
    speech: list[torch.Tensor]  # per row shape = (N_i,) clean speech, when the dataset keeps it; [] otherwise

    def keep_modalities(self, modalities: str) -> Batch:
        """Blank the stream that `modalities` leaves out (zeros = the mean of standardised features)."""
        if modalities == AUDIO_VISUAL:
            return self
        audio, video = keep_modalities(self.audio, self.video, modalities)
        return self._replace(audio=audio, video=video)

    def to(self, device: torch.device | str) -> Batch:
        return self._replace(**{k: v.to(device) for k, v in self._asdict().items() if torch.is_tensor(v)})


@dataclass
class LoadReport:
    loaded: int = 0
    audio_only: list[str] = field(default_factory=list)  # loaded, but no face in the video: audio alone
    skipped: dict[str, list[str]] = field(
        default_factory=lambda: {"no_face": [], "too_short": [], "few_frames": [], "av_rate": []}
    )

    def admit(self, entry: ManifestEntry, streams: str, frames: int, config: Config, mel_frames: int = 0) -> bool:
        """Apply the loading policy (module docstring) to an utterance of `frames` video frames and `mel_frames`
        log-mel frames (0: unknown, the rate is then not checked): True to keep it; otherwise its skip is recorded."""
        if streams == AUDIO_ONLY and config.modalities == VIDEO_ONLY:
            self.skipped["no_face"].append(f"{entry.where} ({entry.video_path})")
            return False
        needed = ctc_min_frames(encode(entry.transcript))
        if frames < needed:
            self.skipped["too_short"].append(f"{entry.utterance_id} ({frames} frames < {needed} needed)")
            return False
        if not self._passes_length_filter(entry, frames, mel_frames, config):
            return False
        if streams == AUDIO_ONLY:
            self.audio_only.append(f"{entry.where} ({entry.video_path})")
        self.loaded += 1
        return True

    def _passes_length_filter(self, entry: ManifestEntry, frames: int, mel_frames: int, config: Config) -> bool:
        if frames < MIN_VIDEO_FRAMES:
            self.skipped["few_frames"].append(f"{entry.utterance_id} ({frames} frames < {MIN_VIDEO_FRAMES})")
            return False
        if not mel_frames:
            return True
        nominal = config.sample_rate / config.fps
        low, high = round(nominal * (1 - AV_RATE_TOLERANCE)), round(nominal * (1 + AV_RATE_TOLERANCE))
        rate = (mel_frames - 1) * config.hop_length / frames  # centred STFT: N // hop + 1 frames
        if not low <= rate <= high:
            self.skipped["av_rate"].append(
                f"{entry.utterance_id} ({rate:.0f} audio samples per video frame, outside {low}-{high})"
            )
            return False
        return True

    def finish(self, path, total: int, errors: list[str], stacklevel: int = 3) -> None:
        """Warn about audio-only utterances; raise DataError listing every unusable one, or when none is left.
        `stacklevel`: the warning names the caller's caller (the code that loaded the dataset)."""
        if self.audio_only:
            warnings.warn(
                f"{path}: no face in {len(self.audio_only)} of {total} videos: those utterances "
                f"run on audio alone ({self.audio_only[0]}, ...)",
                stacklevel=stacklevel,
            )
        if errors:
            raise DataError(f"{path}: {len(errors)} unusable utterance(s):\n" + "\n".join(f"  {e}" for e in errors))
        if not self.loaded:
            raise DataError(f"{path}: no usable utterances ({self.summary()})")

    def summary(self) -> str:
        parts = [f"{self.loaded} utterances loaded"]
        if self.audio_only:
            parts.append(f"{len(self.audio_only)} of them on audio alone (no face): {_first_few(self.audio_only)}")
        for reason, where in self.skipped.items():
            if where:
                parts.append(f"{len(where)} skipped ({reason}): {_first_few(where)}")
        return "; ".join(parts)


def _first_few(where: list[str], shown: int = 5) -> str:
    return ", ".join(where[:shown]) + (" ..." if len(where) > shown else "")


def indexed_frames(row: IndexRow, config: Config) -> int:
    """The video frames (= model output frames) of an indexed utterance, known without opening its features."""
    return video_frames_of_audio(row.mel_frames, config) if row.no_face else row.crop_frames


def utterance_from_features(
    entry: ManifestEntry, features: Features, config: Config, keep_speech: bool = False
) -> Utterance:
    """Align one entry's features; a video without a face gives an AUDIO_ONLY utterance whose frame count comes
    from the audio. keep_speech: also hold the clean speech (for noise; see `Utterance.speech`).
    Raises AudioError / VideoError naming the file."""
    mel = features.mel  # (n_mels, T_a)
    if features.no_face:
        frames = video_frames_of_audio(mel.shape[1], config)
        crops = torch.zeros(frames, config.lip_size, config.lip_size, dtype=torch.uint8)  # (T_v, H, W)
    else:
        crops = features.crops  # (T_v, lip_size, lip_size)
        check_durations(mel.shape[1], crops.shape[0], config, entry.audio_path, entry.video_path)
    return Utterance(
        id=entry.utterance_id,
        speaker=entry.speaker,
        audio=align_audio_to_video(mel, crops.shape[0], config),
        video=crops,
        targets=torch.tensor(encode(entry.transcript), dtype=torch.long),
        transcript=entry.transcript,
        streams=AUDIO_ONLY if features.no_face else AUDIO_VISUAL,
        speech=load_speech(entry.audio_path, config, entry.segment) if keep_speech else None,
        mel_frames=mel.shape[1],
    )


def load_utterance(entry: ManifestEntry, config: Config, keep_speech: bool = False) -> Utterance:
    """Featurise (or read from the cache, hashing the files) and align one manifest entry."""
    features = (
        FeatureCache(config.cache_dir, config).get(entry) if config.cache_dir else compute_features(entry, config)
    )
    return utterance_from_features(entry, features, config, keep_speech)


def _load_or_error(job: tuple[ManifestEntry, Config, bool]) -> Utterance | Exception:
    """Pool-friendly: data errors come back as values so one bad file does not hide the others."""
    try:
        return load_utterance(*job)
    except (AudioError, VideoError) as e:
        return e
    except OSError as e:  # a file that vanished or became unreadable after the manifest was checked
        return VideoError(f"cannot read {e.filename}: {e.strerror}" if e.filename else str(e))


def load_all(
    entries: list[ManifestEntry], config: Config, desc: str, progress: bool, keep_speech: bool = False
) -> list[Utterance | Exception]:
    """Load entries in order, in `config.data_workers` processes (0 = all cores) when there is enough work."""
    jobs = [(e, config, keep_speech) for e in entries]
    loads = in_processes(_load_or_error, jobs, worker_count(config.data_workers, len(jobs)), chunksize=LOAD_CHUNK)
    return list(tqdm(loads, total=len(jobs), desc=desc, unit="utt", disable=not progress))


def select_indexed(
    indexed: IndexedManifest,
    config: Config,
) -> tuple[list[tuple[ManifestEntry, IndexRow]], LoadReport, list[str]]:
    """The utterances of an indexed manifest that the loading policy keeps, decided from the index alone (no
    features read), the report, and every unusable utterance ("manifest:line: problem")."""
    report, kept, errors = LoadReport(), [], []
    for entry, row in zip(indexed.entries, indexed.rows):
        try:
            if isinstance(row, str):
                raise VideoError(row)
            if not row.no_face:
                check_durations(row.mel_frames, row.crop_frames, config, entry.audio_path, entry.video_path)
        except VideoError as e:
            errors.append(f"{entry.where}: {e}")
            continue
        if report.admit(
            entry, AUDIO_ONLY if row.no_face else AUDIO_VISUAL, indexed_frames(row, config), config, row.mel_frames
        ):
            kept.append((entry, row))
    return kept, report, errors


def usable_utterances(
    path,
    config: Config,
    progress: bool = True,
) -> tuple[list[tuple[ManifestEntry, IndexRow]], LoadReport]:
    """The utterances of a manifest that the loading policy keeps, through its index (utterances it lacks are
    featurised into the cache first), and the report; DataError lists every unusable one."""
    [indexed], _ = index_manifests([path], config, progress=progress)
    kept, report, errors = select_indexed(indexed, config)
    report.finish(path, len(indexed.entries), errors, stacklevel=4)
    return kept, report


class AVDataset(Dataset):
    """Utterances held in memory (lip crops as uint8). Build it with `from_manifest`; with keep_speech, each
    utterance also holds its clean speech, which noise needs (avasr.data.noisy_speech, avasr.augment)."""

    def __init__(self, utterances: list[Utterance], report: LoadReport | None = None):
        self.utterances = utterances
        self.report = report or LoadReport(loaded=len(utterances))

    @classmethod
    def from_manifest(cls, path, config: Config, progress: bool = True, keep_speech: bool = False) -> AVDataset:
        if config.cache_dir:  # through the manifest's index: a warm start reads only the cached features
            kept, report = usable_utterances(path, config, progress)
            cache = FeatureCache(config.cache_dir, config)
            utterances = [
                utterance_from_features(entry, cache.get(entry, row.key), config, keep_speech)
                for entry, row in tqdm(kept, desc=f"loading {Path(path).name}", unit="utt", disable=not progress)
            ]
            return cls(utterances, report)
        entries = read_manifest(path)
        report, utterances, errors = LoadReport(), [], []
        loads = load_all(entries, config, f"loading {Path(path).name}", progress, keep_speech)
        for entry, loaded in zip(entries, loads):
            if isinstance(loaded, Exception):
                errors.append(f"{entry.where}: {loaded}")
            elif report.admit(entry, loaded.streams, loaded.video.shape[0], config, loaded.mel_frames):
                utterances.append(loaded)
        report.finish(path, len(entries), errors)
        return cls(utterances, report)

    @property
    def lengths(self) -> list[int]:
        """Video frames of each utterance (for length-bucketed batches)."""
        return [u.video.shape[0] for u in self.utterances]

    @property
    def members(self) -> list[tuple[str, str]]:
        """(utterance id, speaker) of every utterance, in order."""
        return [(u.id, u.speaker) for u in self.utterances]

    @property
    def keeps_speech(self) -> bool:
        return all(u.speech is not None for u in self.utterances)

    def speech_sample(self, size: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
        """(id, speaker, clean speech shape = (N,)) of every utterance, loaded with keep_speech: held in memory
        already, so none is left out (`size` and `seed` bound what a StreamingDataset reads)."""
        return [(u.id, u.speaker, u.speech.numpy()) for u in self.utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> Utterance:
        return self.utterances[index]


def collate(utterances: Sequence[Utterance]) -> Batch:
    """Pad a list of utterances into a Batch (zeros beyond each length, and for the video of AUDIO_ONLY ones)."""
    video_lengths = torch.tensor([u.video.shape[0] for u in utterances])
    target_lengths = torch.tensor([len(u.targets) for u in utterances])
    t_video, n_labels = int(video_lengths.max()), int(target_lengths.max())
    n_mels, size = utterances[0].audio.shape[0], utterances[0].video.shape[-1]
    audio = torch.zeros(len(utterances), 1, n_mels, AUDIO_TIME_DOWNSAMPLING * t_video)  # (B, 1, n_mels, T_a)
    video = torch.zeros(len(utterances), t_video, 1, size, size)  # (B, T_v, 1, H, W)
    targets = torch.zeros(len(utterances), n_labels, dtype=torch.long)  # (B, L_max)
    for i, u in enumerate(utterances):
        audio[i, 0, :, : u.audio.shape[1]] = u.audio
        if u.streams != AUDIO_ONLY:
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
        speakers=[u.speaker for u in utterances],
        streams=[u.streams for u in utterances],
        speech=[u.speech for u in utterances] if all(u.speech is not None for u in utterances) else [],
    )
