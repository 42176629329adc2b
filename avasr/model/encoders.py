"""The original's two encoders: three 3x3 conv layers (BN, ReLU, stride 2) and two FC layers to `feature_dim`.

Both return one feature vector per video frame (25 Hz), so fusion sees aligned sequences.
"""

from __future__ import annotations

import torch
from torch import nn

from avasr.config import ModelConfig
from avasr.model.edges import pad_time

VIDEO_POOLED_SIZE = 4  # the original's video encoder flattens 128 x 4 x 4 before its first FC layer
# Conv weights are kept channels-last: on CPU, oneDNN's NHWC kernels train faster than NCHW weights, for the small
# model and the original-size one (benchmarks/train_step.py; docs/benchmarks.md). Loading a state dict copies values
# into this layout, so checkpoints of either layout load.
CONV_LAYOUT = torch.channels_last


def conv_bn_relu(
    c_in: int, c_out: int, stride: tuple[int, int] | int, padding: tuple[int, int] | int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def conv_output_size(size: int, strides: tuple[int, ...]) -> int:
    """The size along one axis after 3x3 convs with padding 1 and these strides."""
    for stride in strides:
        size = (size + stride - 1) // stride
    return size


def fc_stack(d_in: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_out),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(d_out, d_out),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )


class AudioEncoder(nn.Module):
    """Log-mel -> one feature per 4 mel frames (100 Hz -> 25 Hz).

    Stride 2 on frequency in all three layers (40 -> 20 -> 10 -> 5 bands, as the original's 128x5 flatten); stride 2 on
    time in the first two only, which gives the x4 time reduction to the video rate. The convs pad frequency with
    zeros themselves; time is padded before each as `time_padding` says (avasr.model.edges).
    """

    TIME_STRIDES = (2, 2, 1)  # product = AUDIO_TIME_DOWNSAMPLING
    FREQ_STRIDES = (2, 2, 2)

    def __init__(self, config: ModelConfig):
        super().__init__()
        c1, c2, c3 = config.encoder_channels
        self.convs = nn.Sequential(
            conv_bn_relu(1, c1, (self.FREQ_STRIDES[0], self.TIME_STRIDES[0]), padding=(1, 0)),
            conv_bn_relu(c1, c2, (self.FREQ_STRIDES[1], self.TIME_STRIDES[1]), padding=(1, 0)),
            conv_bn_relu(c2, c3, (self.FREQ_STRIDES[2], self.TIME_STRIDES[2]), padding=(1, 0)),
        ).to(memory_format=CONV_LAYOUT)
        self.time_padding = config.time_padding
        bands = conv_output_size(config.n_mels, self.FREQ_STRIDES)
        self.fc = fc_stack(c3 * bands, config.feature_dim, config.dropout)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """audio shape = (B, 1, n_mels, T_a), lengths (B,) valid mel frames (default: all)
        -> (B, ceil(T_a / 4), feature_dim).

        Padded time steps are zeroed after every conv block: BatchNorm + ReLU turn the zero padding into non-zero
        values that the next kernel would otherwise mix into the last valid frames, so an utterance's output would
        depend on how much padding its batch has.
        """
        x = audio
        if lengths is None:
            lengths = torch.full(audio.shape[:1], audio.shape[-1], dtype=torch.long, device=audio.device)
        for block, stride in zip(self.convs, self.TIME_STRIDES):
            x = block(pad_time(x, lengths, 1, dim=3, mode=self.time_padding))  # (B, C, F', T')
            lengths = (lengths + stride - 1) // stride
            valid = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]  # (B, T')
            x = torch.where(valid[:, None, None, :], x, 0.0)
        B, C, F, T = x.shape
        x = x.permute(0, 3, 1, 2).reshape(B, T, C * F)  # (B, T, C*F')
        return self.fc(x)  # (B, T, D)


class VideoEncoder(nn.Module):
    """Each 64x64 lip crop on its own: three stride-2 convs (64 -> 8), average pooling to 4x4, two FC layers.

    Smaller crops whose convs already end at 4x4 (32x32) skip the pooling: an identity pool still cost several
    percent of a training step (its backward writes every activation again).
    """

    STRIDES = (2, 2, 2)

    def __init__(self, config: ModelConfig):
        super().__init__()
        c1, c2, c3 = config.encoder_channels
        conv_size = conv_output_size(config.lip_size, self.STRIDES)
        self.convs = nn.Sequential(
            conv_bn_relu(1, c1, self.STRIDES[0]),
            conv_bn_relu(c1, c2, self.STRIDES[1]),
            conv_bn_relu(c2, c3, self.STRIDES[2]),
            nn.Identity() if conv_size == VIDEO_POOLED_SIZE else nn.AdaptiveAvgPool2d(VIDEO_POOLED_SIZE),
        ).to(memory_format=CONV_LAYOUT)
        self.fc = fc_stack(c3 * VIDEO_POOLED_SIZE**2, config.feature_dim, config.dropout)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video shape = (B, T_v, 1, H, W) -> (B, T_v, feature_dim)."""
        B, T = video.shape[:2]
        x = self.convs(video.flatten(0, 1))  # (B*T, C, 4, 4)
        x = x.reshape(B, T, -1)  # (B, T, C*16)
        return self.fc(x)  # (B, T, D)
