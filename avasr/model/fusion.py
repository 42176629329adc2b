"""Four ways to fuse the two 25 Hz streams. Each maps audio (B, T, D), video (B, T, D) and a validity mask
(B, T) to (B, T, D), so the rest of the model does not care which one it got."""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_HEADS = 8
ATTENTION_WINDOW = 5  # audio frames attend to video within +-5 frames (+-200 ms): lips lead or lag the sound a little


class SimpleFusion(nn.Module):
    """Concatenate and project back to D: the baseline."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, audio, video, mask):
        return self.proj(torch.cat([audio, video], dim=-1))  # (B, T, 2D) -> (B, T, D)


class WeightedFusion(nn.Module):
    """One learned weight per modality (softmax over two logits), shared by all frames and utterances."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2))

    def modality_weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)  # (2,) audio, video

    def forward(self, audio, video, mask):
        w = self.modality_weights()
        return w[0] * audio + w[1] * video


class AttentionFusion(nn.Module):
    """Audio frames query nearby video frames (cross-modal attention in a local window), then concat + project."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, ATTENTION_HEADS, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(inplace=True), nn.Dropout(dropout))

    def forward(self, audio, video, mask):
        attended, _ = self.attn(audio, video, video, attn_mask=self.blocked(mask), need_weights=False)  # (B, T, D)
        return self.proj(torch.cat([audio, self.norm(video + attended)], dim=-1))  # (B, T, D)

    def blocked(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) validity -> (B * heads, T, T), True where a query may not look: outside the window or padding.

        A frame may always see itself, so no row is fully blocked (that would give NaN even in padded rows, and
        NaN leaks into gradients through any later masking).
        """
        T = mask.shape[1]
        steps = torch.arange(T, device=mask.device)
        outside_window = (steps[:, None] - steps[None, :]).abs() > ATTENTION_WINDOW  # (T, T)
        blocked = outside_window[None] | ~mask[:, None, :]  # (B, T, T)
        blocked = blocked & ~torch.eye(T, dtype=torch.bool, device=mask.device)
        return blocked.repeat_interleave(self.attn.num_heads, dim=0)  # (B*H, T, T)


class AdaptiveFusion(nn.Module):
    """A per-frame, per-channel gate computed from both streams: g * audio + (1 - g) * video.

    When the audio is noisy in some frames the gate can lean on the lips there and nowhere else.
    """

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(2 * dim, dim), nn.Sigmoid())
        self.dropout = nn.Dropout(dropout)

    def forward(self, audio, video, mask):
        g = self.gate(torch.cat([audio, video], dim=-1))  # (B, T, D) in (0, 1)
        return self.dropout(g * audio + (1 - g) * video)


FUSION_CLASSES = {
    "simple": SimpleFusion,
    "weighted": WeightedFusion,
    "attention": AttentionFusion,
    "adaptive": AdaptiveFusion,
}
