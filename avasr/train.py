"""The one training loop. `fit(config)` trains from manifests in a plain process; a Ray Train worker calls the very
same `fit` with a `report` callback (see avasr.sweep.trial).

The objective is avasr.objective's: CTC with label smoothing.

Early stopping: an epoch "improves" when val WER is lower than the best so far, or equal with a lower val loss.
The tie-break keeps the first epochs alive, when the model still emits only blanks and WER sits at 1.0 while
the loss falls. LR decay on plateau uses the same notion (torch's ReduceLROnPlateau watches one number only):
the LR is multiplied by `lr_decay_factor` after every `lr_decay_patience` epochs without improvement.

The LR is set before every optimizer step from the step's index alone (`learning_rate`): optional linear warm-up,
then the plateau decays so far or a cosine over `epochs`. A resumed run therefore continues the schedule exactly.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from avasr.augment import Augmenter
from avasr.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from avasr.config import Config
from avasr.data.dataset import AVDataset, Batch
from avasr.data.loader import make_loader
from avasr.data.streaming import StreamingDataset
from avasr.decode import Lexicon
from avasr.device import autocast, pick_device, to_device
from avasr.errors import AvasrError, OutputError
from avasr.evaluation import evaluate
from avasr.model import build_model, count_parameters
from avasr.objective import ctc_objective

LOG_FILE = "training.log"
METRICS_FILE = "metrics.csv"
# seconds = data_s (waiting for batches, augmenting them) + step_s (forward, backward, optimizer) + eval_s
# + save_s (checkpoints)
METRIC_FIELDS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_wer",
    "val_cer",
    "lr",
    "seconds",
    "data_s",
    "step_s",
    "eval_s",
    "save_s",
)

ReportFn = Callable[[dict, Path], None]  # (this epoch's metrics, folder holding the checkpoints just written)


class TrainingError(AvasrError, RuntimeError):
    pass


@dataclass
class EarlyStopState:
    epoch: int = 0  # epochs completed
    best_wer: float = math.inf
    best_loss: float = math.inf
    bad_epochs: int = 0
    lr_decays: int = 0  # plateau decays so far

    def update(self, wer: float, loss: float) -> bool:
        """Record an epoch's validation result; True when it is the best so far."""
        improved = wer < self.best_wer or (wer == self.best_wer and loss < self.best_loss)
        if improved:
            self.best_wer, self.best_loss, self.bad_epochs = wer, loss, 0
        else:
            self.bad_epochs += 1
        return improved

    def should_decay_lr(self, decay_patience: int) -> bool:
        """Plateau for LR decay uses the same notion of improvement, every `decay_patience` bad epochs."""
        return self.bad_epochs > 0 and self.bad_epochs % decay_patience == 0


def learning_rate(config: Config, step: int, steps_per_epoch: int, lr_decays: int = 0) -> float:
    """The LR of optimizer step `step` (0-based, counted over the whole run); see the module docstring."""
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / (warmup + 1)
    if config.lr_schedule == "cosine":
        progress = min((step - warmup) / max(config.epochs * steps_per_epoch - warmup, 1.0), 1.0)
        final = config.lr * config.lr_final_ratio
        return final + (config.lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * config.lr_decay_factor**lr_decays


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --- setup -----------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for its deterministic kernels where it has them (a warning, not
    an error, where it has none, e.g. CTC's backward on CUDA). A seed then reproduces a run exactly on machines of
    one kind with the same thread count: floating-point sums are split across threads, so the thread count is part
    of the numerics (the sweep trains every trial on floor(cpus_per_trial) threads)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


# --- one epoch -------------------------------------------------------------------------------------------------
def train_one_epoch(
    model,
    loader,
    optimizer,
    config: Config,
    device,
    desc: str = "train",
    lr_at: Callable[[int], float] | None = None,
    augment: Callable[[Batch], Batch] | None = None,
    averaged: AveragedModel | None = None,
) -> tuple[float, float]:
    """One pass over `loader` -> (mean loss, seconds spent waiting for batches, augmentation included). `lr_at(i)`
    sets the LR of the epoch's i-th step (None: leave the optimizer's); `augment` changes each batch (avasr.augment);
    `averaged` takes the weights into its moving average after every step."""
    model.train()
    total, count, waited = 0.0, 0, 0.0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False)
    batches = iter(bar)
    for i in itertools.count():
        asked = time.perf_counter()
        batch = next(batches, None)
        if batch is not None and augment is not None:
            batch = augment(batch)
        waited += time.perf_counter() - asked
        if batch is None:
            break
        if lr_at is not None:
            set_lr(optimizer, lr_at(i))
        batch = to_device(batch.keep_modalities(config.modalities), device)
        with autocast(device, config.precision):  # the forward pass only: backward follows the forward's dtypes
            log_probs = model(batch.audio, batch.video, batch.video_lengths)
            loss = ctc_objective(log_probs, batch, config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if averaged is not None:
            averaged.update_parameters(model)
        total += loss.item() * len(batch.ids)
        count += len(batch.ids)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / count, waited


# --- weight averaging ------------------------------------------------------------------------------------------
# With `ema_decay`, a checkpoint's "model" holds the averaged weights (what inference and export load), and the
# weights the optimizer trains travel beside them for a resumed run to continue from.
TRAINED_WEIGHTS, AVERAGED_STEPS = "trained_model", "averaged_steps"


def moving_average(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights and BatchNorm statistics (None for decay 0)."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def averaging_state(model: torch.nn.Module, averaged: AveragedModel | None) -> dict:
    """What a checkpoint keeps beside the averaged weights: the trained ones and how many steps were averaged."""
    if averaged is None:
        return {}
    return {TRAINED_WEIGHTS: model.state_dict(), AVERAGED_STEPS: int(averaged.n_averaged)}


def restore_average(averaged: AveragedModel, checkpoint: dict) -> None:
    """Continue the average a checkpoint holds; one written without averaging starts it anew."""
    if AVERAGED_STEPS not in checkpoint:
        return
    averaged.module.load_state_dict(checkpoint["model"])
    averaged.n_averaged.fill_(checkpoint[AVERAGED_STEPS])


# --- the loop --------------------------------------------------------------------------------------------------
def setup_logging(output_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"avasr.train.{output_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for old in logger.handlers[:]:  # a folder trained in twice in one process (resume, benchmarks)
        logger.removeHandler(old)
        old.close()
    handler = logging.FileHandler(output_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def append_metrics(output_dir: Path, row: dict) -> None:
    path = output_dir / METRICS_FILE
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row[k] for k in METRIC_FIELDS})


def load_datasets(config: Config) -> tuple[Dataset, Dataset]:
    """(train, val): in memory, or streamed from the feature cache with `config.streaming`."""
    if not config.train_manifest or not config.val_manifest:
        raise TrainingError("train_manifest and val_manifest must both be set (--train-manifest, --val-manifest)")
    if config.streaming:
        return (
            StreamingDataset.from_manifest(config.train_manifest, config, keep_speech=config.noise_prob > 0),
            StreamingDataset.from_manifest(config.val_manifest, config),
        )
    train_set = AVDataset.from_manifest(config.train_manifest, config, keep_speech=config.noise_prob > 0)
    return train_set, AVDataset.from_manifest(config.val_manifest, config)


def fit(
    config: Config,
    datasets: tuple[Dataset, Dataset] | None = None,
    report: ReportFn | None = None,
    resume: str | Path | None = None,
) -> dict:
    """Train until `config.epochs` or early stopping. Returns the best epoch's metrics (with `param_count`)."""
    output_dir = Path(config.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        log = setup_logging(output_dir)
    except OSError as e:
        raise OutputError(f"{output_dir}: cannot write the output folder: {e}") from None
    seed_everything(config.seed)
    device = pick_device(config)
    train_set, val_set = datasets or load_datasets(config)
    for name, ds in (("train", train_set), ("val", val_set)):
        log.info("%s data: %s", name, ds.report.summary())
    lexicon = Lexicon.from_file(config.lexicon) if config.lexicon else None
    augmenter = Augmenter(config, train_set)

    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    averaged = moving_average(model, config.ema_decay)
    scored = model if averaged is None else averaged.module  # what each epoch scores and the checkpoints keep
    state = EarlyStopState()
    best_metrics: dict = {}
    if resume:
        checkpoint = load_checkpoint(resume)
        model.load_state_dict(checkpoint.get(TRAINED_WEIGHTS, checkpoint["model"]))
        if averaged is not None:
            restore_average(averaged, checkpoint)
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = EarlyStopState(**checkpoint["state"])
        best_metrics = checkpoint["best_metrics"]
        restore_rng_state(checkpoint["rng"])
        log.info("resumed from %s after epoch %d", resume, state.epoch)
    params = count_parameters(model)
    log.info("config: %s", config.to_dict())
    log.info("model: fusion=%s, %d parameters, device %s", config.fusion, params, device)

    val_loader = make_loader(val_set, config, shuffle=False)
    # The LR schedule counts steps with one epoch length: length-bucketed epochs differ by a batch or so
    steps = len(make_loader(train_set, config, shuffle=True, epoch=0))
    epochs = tqdm(
        range(state.epoch, config.epochs),
        desc=f"fit {config.fusion}",
        unit="epoch",
        initial=state.epoch,
        total=config.epochs,
    )
    for epoch in epochs:
        if state.bad_epochs >= config.patience:
            log.info("early stop: val WER has not improved for %d epochs", state.bad_epochs)
            break
        started = time.perf_counter()
        train_loader = make_loader(train_set, config, shuffle=True, epoch=epoch)
        decays = state.lr_decays
        lr = learning_rate(config, epoch * steps, steps, decays)
        rng = np.random.default_rng([config.seed, epoch])  # augmentation draws: a function of (seed, epoch)
        train_loss, data_s = train_one_epoch(
            model,
            train_loader,
            optimizer,
            config,
            device,
            desc=f"epoch {epoch + 1}",
            lr_at=lambda i: learning_rate(config, epoch * steps + i, steps, decays),  # noqa: B023 (this epoch only)
            augment=(lambda batch: augmenter(batch, rng)) if augmenter.active else None,  # noqa: B023 (this epoch only)
            averaged=averaged,
        )
        trained = time.perf_counter()
        val = evaluate(scored, val_loader, config, device, lexicon)
        evaluated = time.perf_counter()
        improved = state.update(val["wer"], val["loss"])
        if config.lr_schedule == "plateau" and state.should_decay_lr(config.lr_decay_patience):
            state.lr_decays += 1
        state.epoch = epoch + 1
        metrics = {
            "epoch": state.epoch,
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "val_wer": val["wer"],
            "val_cer": val["cer"],
            "lr": lr,
            "param_count": params,
        }
        if improved:
            best_metrics = dict(metrics)
        payload = {
            "config": config.to_dict(),
            "model": scored.state_dict(),
            **averaging_state(model, averaged),
            "optimizer": optimizer.state_dict(),
            "state": asdict(state),
            "best_metrics": best_metrics,
            "rng": rng_state(),
        }
        if improved:
            save_checkpoint(output_dir / BEST_CHECKPOINT, payload)
        save_checkpoint(output_dir / LAST_CHECKPOINT, payload)
        done = time.perf_counter()
        metrics |= {
            "seconds": done - started,
            "data_s": data_s,
            "step_s": trained - started - data_s,
            "eval_s": evaluated - trained,
            "save_s": done - evaluated,
        }
        append_metrics(output_dir, metrics)
        log.info(
            "epoch %d: train_loss %.4f val_loss %.4f val_wer %.4f val_cer %.4f lr %.2e%s",
            state.epoch,
            train_loss,
            val["loss"],
            val["wer"],
            val["cer"],
            metrics["lr"],
            " (best)" if improved else "",
        )
        epochs.set_postfix(wer=f"{val['wer']:.3f}", cer=f"{val['cer']:.3f}", loss=f"{val['loss']:.3f}")
        if report is not None:
            report(metrics, output_dir)
    return best_metrics
