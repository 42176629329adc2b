"""Temporal context after fusion: the original's encoders see one frame at a time, but CTC over characters needs
to know its neighbours. Residual blocks of dilated depthwise-separable 1-D convolutions are cheap (~0.27M
parameters per block at D = 512), export cleanly to ONNX with dynamic lengths, and with masking their output
for an utterance does not depend on how much padding its batch has. Time is padded as `time_padding` says
(avasr.model.edges)."""

from __future__ import annotations

import torch
from torch import nn

from avasr.model.edges import pad_time


class TemporalConvBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, dilation: int, dropout: float, time_padding: str):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel, dilation=dilation, groups=dim)
        self.reach = dilation * (kernel - 1) // 2  # frames the kernel reads on each side
        self.time_padding = time_padding
        self.pointwise = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x shape = (B, T, D), mask (B, T) -> (B, T, D); padded frames are zero on the way in and out."""
        h = torch.where(mask[..., None], x, 0.0)
        h = pad_time(h, mask.sum(dim=1), self.reach, dim=1, mode=self.time_padding)  # (B, T + 2 * reach, D)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)  # (B, D, T + 2 * reach) -> (B, T, D)
        h = self.dropout(self.act(self.pointwise(h)))
        return torch.where(mask[..., None], self.norm(x + h), 0.0)


class TemporalBlock(nn.Module):
    """`layers` residual blocks with dilations 1, 2, 4, ...: receptive field 1 + (kernel - 1) * (2**layers - 1)."""

    def __init__(self, dim: int, layers: int, kernel: int, dropout: float, time_padding: str):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd to keep frames centred, got {kernel}")
        self.blocks = nn.ModuleList(TemporalConvBlock(dim, kernel, 2**i, dropout, time_padding) for i in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x
