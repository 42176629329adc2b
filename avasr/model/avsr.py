"""The whole model: two encoders -> fusion -> temporal block -> CTC head (log-probs over 29 symbols)."""

from __future__ import annotations

import torch
from torch import nn

from avasr.config import AUDIO_TIME_DOWNSAMPLING, NUM_CLASSES, ModelConfig
from avasr.model.encoders import AudioEncoder, VideoEncoder
from avasr.model.fusion import FUSION_CLASSES
from avasr.model.temporal import TemporalBlock


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) -> (B, max_len) bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def without_still_appearance(video: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each pixel minus its mean over the utterance's valid frames; padded frames stay zero.
    shape = (B, T, 1, H, W) -> the same."""
    mask = lengths_to_mask(lengths, video.shape[1]).to(video.dtype)[:, :, None, None, None]  # (B, T, 1, 1, 1)
    mean = (video * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1, 1, H, W)
    return (video - mean) * mask


class AVSRModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dim = config.feature_dim
        self.audio_encoder = AudioEncoder(config)
        self.video_encoder = VideoEncoder(config)
        self.fusion = FUSION_CLASSES[config.fusion](dim, config.dropout)
        self.temporal = TemporalBlock(
            dim, config.temporal_layers, config.temporal_kernel, config.dropout, config.time_padding
        )
        self.ctc_head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, audio: torch.Tensor, video: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """audio (B, 1, n_mels, 4 * T), video (B, T, 1, H, W), lengths (B,) valid video frames (default: all)
        -> log-probs shape = (B, T, 29)."""
        if lengths is None:
            lengths = torch.full(video.shape[:1], video.shape[1], dtype=torch.long, device=video.device)
        if self.config.lip_motion:
            video = without_still_appearance(video, lengths)
        v = self.video_encoder(video)  # (B, T, D)
        a = self.audio_encoder(audio, AUDIO_TIME_DOWNSAMPLING * lengths)[:, : v.shape[1]]  # (B, T, D) at 25 Hz
        mask = lengths_to_mask(lengths, v.shape[1])  # (B, T)
        x = self.temporal(self.fusion(a, v, mask), mask)  # (B, T, D)
        return self.ctc_head(x).log_softmax(dim=-1)  # (B, T, C)


def build_model(config: ModelConfig) -> AVSRModel:
    """The network of `config`'s ModelConfig part: a training run's whole Config may be passed, the model keeps and
    reads only its own section."""
    return AVSRModel(ModelConfig.of(config))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
