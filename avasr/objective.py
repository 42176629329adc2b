"""Objective: CTC (blank 0) with label smoothing done the way CTC allows it. CTC has no per-frame targets to smooth,
so smoothing is a mixture with a uniform-posterior term (Chorowski & Jaitly, 2017):

    loss = (1 - eps) * CTC + eps * mean over valid frames of ( -1/C * sum_c log p_t(c) )

i.e. the cross-entropy of each frame's posterior against the uniform distribution. It penalises over-confident
frames exactly as smoothed cross-entropy does, and with eps = 0 it is plain CTC.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avasr.config import NUM_CLASSES
from avasr.data.dataset import Batch
from avasr.errors import AvasrError
from avasr.model import lengths_to_mask
from avasr.text import BLANK_ID


class ObjectiveError(AvasrError, RuntimeError):
    """A loss that cannot be computed (non-finite CTC)."""


def ctc_objective(log_probs: torch.Tensor, batch: Batch, label_smoothing: float) -> torch.Tensor:
    """log_probs shape = (B, T, C) -> scalar loss (see the module docstring)."""
    log_probs = log_probs.float()  # fp32 under bf16 autocast too: CTC's sums over paths need fp32's mantissa
    ctc = F.ctc_loss(
        log_probs.transpose(0, 1),
        batch.targets,
        batch.video_lengths,
        batch.target_lengths,
        blank=BLANK_ID,
        reduction="mean",
        zero_infinity=False,
    )  # expects (T, B, C)
    if not torch.isfinite(ctc):
        raise ObjectiveError(f"non-finite CTC loss in batch {batch.ids}: an utterance too short for its transcript?")
    if label_smoothing == 0:
        return ctc
    mask = lengths_to_mask(batch.video_lengths, log_probs.shape[1])  # (B, T)
    uniform_ce = -log_probs.sum(dim=-1) / NUM_CLASSES  # (B, T)
    smooth = uniform_ce[mask].mean()
    return (1 - label_smoothing) * ctc + label_smoothing * smooth
