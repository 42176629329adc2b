"""Where tensors live and in which precision the model computes: one decision per run, from `Config.device` and
`Config.precision`. Everything that places a tensor asks this module: the model goes to `pick_device(config)`,
batches follow it with `to_device`, DataLoaders pin their batches when it is CUDA (`pin_memory`), and forward
passes run under `autocast`.

bf16 is autocast's: weights, gradients and the optimizer's state stay fp32, matrix multiplications and convolutions
compute in bf16, and the CTC loss is computed in fp32 (avasr.objective casts the log-probs). bf16 has fp32's
exponent range, so no loss scaling is needed. It runs on any CPU (fast with AVX-512 BF16 or AMX) and on GPUs of
compute capability 8.0 or more (A100, H100).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from avasr.config import Config
from avasr.errors import AvasrError

NO_CUDA = "torch sees no CUDA device (torch.cuda.is_available() is False)"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16}  # fp32 runs without autocast


class DeviceError(AvasrError, RuntimeError):
    """A device or precision that was asked for and is not there."""


def pick_device(config: Config) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device='cuda' was asked for but {NO_CUDA}: pass --device cpu (or auto) to train here")
    return torch.device(config.device)


def autocast(device: torch.device | str, precision: str) -> AbstractContextManager:
    """The context a forward pass runs in: bf16 autocast on `device`'s type, or nothing for fp32."""
    device = torch.device(device)
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(
            f"precision='bf16' needs a GPU of compute capability 8.0 or more, and {torch.cuda.get_device_name(device)} "
            "is older: pass --precision fp32"
        )
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def pin_memory(device: torch.device | str) -> bool:
    """DataLoaders pin their batches for a CUDA device: copies from pinned memory run without blocking the CPU."""
    return torch.device(device).type == "cuda"


def to_device(batch, device: torch.device | str):
    """A Batch (any NamedTuple) with its tensors on `device`; to CUDA without waiting for the copy (its stream
    orders the copy before the kernels that read it), so the next batch is prepared meanwhile."""
    non_blocking = pin_memory(device)  # the loader pinned it
    tensors = {k: v.to(device, non_blocking=non_blocking) for k, v in batch._asdict().items() if torch.is_tensor(v)}
    return batch._replace(**tensors)
