"""Padding in time for the model's convolutions: what a kernel reads before an utterance's first frame and after its
last.

Zeros (what a convolution's own padding adds) mark where the clip begins and ends, and a network with CTC uses the
mark: it learns to emit the first and last words' letters at the clip's edges, which works only while the speech
starts and ends within its receptive field of them, as in the corpus it was trained on. Repeating each
utterance's own first and last frames instead (`edge`) makes a clip's start look like more of its leading silence,
so the letters have to come from the speech itself (docs/decisions.md says what it measured).

Each row repeats its own last *valid* frame, so an utterance's output does not depend on how much padding its
batch has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avasr.config import ZERO_PADDING


def pad_time(x: torch.Tensor, lengths: torch.Tensor, width: int, dim: int, mode: str) -> torch.Tensor:
    """`width` frames added before and after along `dim`: each row's first and last valid frames repeated (`edge`;
    frames past a row's length read its last valid one too) or zeros (frames past a row's length are left as they
    are: the masked layers keep them zero). x shape = (B, ..., T, ...) with T at `dim`, lengths (B,) -> x's shape
    with T + 2 * width at `dim`."""
    if width == 0:
        return x
    if mode == ZERO_PADDING:
        after = x.dim() - 1 - (dim % x.dim())  # F.pad counts axes from the last
        return F.pad(x, (0, 0) * after + (width, width))
    frames = x.shape[dim]
    source = torch.arange(-width, frames + width, device=x.device)[None, :].clamp(min=0)  # (1, T + 2w)
    source = torch.minimum(source, (lengths[:, None] - 1).clamp(min=0))  # (B, T + 2w): each row's own last frame
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], source.shape[1]
    size = list(x.shape)
    size[dim] = source.shape[1]
    return torch.gather(x, dim, source.reshape(shape).expand(size))
