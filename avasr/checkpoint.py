"""The checkpoint format: what a training folder holds, how it is written and read, and the model it rebuilds.

A checkpoint is one `torch.save`d dict, loadable with `weights_only=True` (plain types and tensors only):

    config        Config.to_dict(): the model is rebuilt from it, so a checkpoint needs nothing else
    model         the model's state_dict
    optimizer     the optimizer's state_dict (resuming)
    state         train.EarlyStopState as a dict (epoch, best WER, patience and LR-decay counters)
    best_metrics  the best epoch's metrics so far
    rng           Python, NumPy and torch RNG states at the end of the epoch (a resumed run draws the same batches)

A training folder holds LAST_CHECKPOINT (every epoch: what a resume needs) and BEST_CHECKPOINT (the epoch with the
lowest val WER: what evaluation, export and inference load).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from avasr.config import Config, ConfigError, with_earlier_defaults
from avasr.errors import AvasrError
from avasr.model import build_model

BEST_CHECKPOINT = "best_model.pth"
LAST_CHECKPOINT = "last.pth"
REQUIRED_KEYS = frozenset({"config", "model"})


class CheckpointError(AvasrError, ValueError):
    """A file that is not a readable avasr checkpoint; the message names it."""


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],  # plain types: weights_only loading
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write then rename: a crash mid-write never leaves a truncated checkpoint under the real name."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, on the CPU. Raises CheckpointError naming the file when it is not one of ours."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on garbage (RuntimeError, UnpicklingError, IndexError...)
        raise CheckpointError(f"{path}: cannot load checkpoint (not a file written by torch.save?): {e}") from None
    if not (isinstance(checkpoint, dict) and REQUIRED_KEYS <= checkpoint.keys()):
        raise CheckpointError(
            f"{path}: not a checkpoint written by avasr training (it holds no {' and '.join(sorted(REQUIRED_KEYS))})"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict, device: str | torch.device = "cpu", where: str = "checkpoint"):
    """Rebuild the model a loaded checkpoint describes. Returns (model in eval mode, config)."""
    try:
        config = Config.from_dict(with_earlier_defaults(checkpoint["config"]))
        model = build_model(config)
        model.load_state_dict(checkpoint["model"])
    except (ConfigError, TypeError, KeyError, RuntimeError) as e:  # a config or weights from another model version
        raise CheckpointError(f"{where}: its config and weights do not make an avasr model: {e}") from None
    return model.to(device).eval(), config


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A checkpoint carries its config: rebuild the model from it. Returns (model in eval mode, config)."""
    return model_from_checkpoint(load_checkpoint(path), device, where=str(path))
