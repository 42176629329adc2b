"""Where tensors live: one decision per run, from `Config.device`."""

from __future__ import annotations

import torch

from avasr.config import Config
from avasr.errors import AvasrError


class DeviceError(AvasrError, RuntimeError):
    """A device that was asked for and is not there."""


def pick_device(config: Config) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device='cuda' was asked for but torch sees no CUDA device")
    return torch.device(config.device)
