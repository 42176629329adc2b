"""From decoded media to model inputs, the same in training and at inference: log-mels aligned to the video
frames, lip crops standardised, a stream blanked, and the checks that a clip's audio and video belong together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from avasr.config import AUDIO_ONLY, AUDIO_TIME_DOWNSAMPLING, LIP_PIXEL_MEAN, LIP_PIXEL_STD, VIDEO_ONLY, Config
from avasr.data.video import VideoError

MAX_AV_MISMATCH_SECONDS = 0.25  # audio and video of one clip may differ by this much; more means a broken pair
PIXEL_MAX = 255.0


def keep_modalities(audio: torch.Tensor, video: torch.Tensor, modalities: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs with the stream `modalities` leaves out blanked (zeros = the mean of standardised features):
    what a model trained on "audio" or "video" alone saw in training, at evaluation and at inference alike."""
    if modalities == AUDIO_ONLY:
        return audio, torch.zeros_like(video)
    if modalities == VIDEO_ONLY:
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


def video_frames_of_audio(mel_frames: int, config: Config) -> int:
    """The video frames a clip of `mel_frames` log-mel frames spans (centred STFT: N // hop + 1 frames)."""
    return max(1, round((mel_frames - 1) / config.mel_frames_per_second * config.fps))
