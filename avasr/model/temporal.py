"""Temporal context after fusion: the original's encoders see one frame at a time, but CTC over characters needs
to know its neighbours. Residual blocks of dilated depthwise-separable 1-D convolutions are cheap (~0.27M
parameters per block at D = 512), export cleanly to ONNX with dynamic lengths, and with masking their output
for an utterance does not depend on how much padding its batch has."""

from __future__ import annotations

import torch
from torch import nn


class TemporalConvBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.depthwise = nn.Conv1d(
            dim, dim, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=dim
        )
        self.pointwise = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x shape = (B, T, D), mask (B, T) -> (B, T, D); padded frames are zero on the way in and out."""
        h = torch.where(mask[..., None], x, 0.0)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)  # (B, D, T) -> (B, T, D)
        h = self.dropout(self.act(self.pointwise(h)))
        return torch.where(mask[..., None], self.norm(x + h), 0.0)


class TemporalBlock(nn.Module):
    """`layers` residual blocks with dilations 1, 2, 4, ...: receptive field 1 + (kernel - 1) * (2**layers - 1)."""

    def __init__(self, dim: int, layers: int, kernel: int, dropout: float):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd to keep frames centred, got {kernel}")
        self.blocks = nn.ModuleList(TemporalConvBlock(dim, kernel, 2**i, dropout) for i in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x
