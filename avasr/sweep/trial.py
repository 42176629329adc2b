"""One trial of the sweep: a Tune function that runs one Ray Train `TorchTrainer`, whose worker runs the one
training loop (`avasr.train.fit`).

    run_trial (Tune function)   the trial's MLflow child run and params, then TorchTrainer.fit()
      train_func (Train worker) avasr.train.fit, reporting each epoch's metrics and checkpoint to Ray

The rank-0 worker logs the per-epoch curves to MLflow (`epoch/val_wer`, ... with step = epoch): it is the only
process that holds an epoch's metrics as they happen (the Tune function is blocked in `fit()`), so the MLflow UI
follows a trial live. Each epoch is logged once, whatever fails (see EpochLog): a retried worker skips the steps
the run holds, and a tracking server that is down holds up neither training nor the curves, which the driver
completes from the checkpoint's metrics.csv when it finalises the trial.

This module is what a Train worker imports to run `train_func`: it stays light (no ONNX, no plotting), since
every import here is paid again by every trial's worker process.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import torch
from mlflow import MlflowClient
from ray import tune
from ray.train import ControllerError
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
from ray.tune.integration.ray_train import TuneReportCallback

from avasr.checkpoint import LAST_CHECKPOINT
from avasr.config import Config
from avasr.errors import AvasrError
from avasr.sweep import tracking
from avasr.sweep.resources import ResourcesError, who_holds
from avasr.sweep.spaces import (
    CONFIG_ID_KEY,
    CONFIG_LABEL_KEY,
    FAIL_AT_EPOCH,
    MLFLOW_RUN_KEY,
    MLFLOW_URI_KEY,
    THREADS_KEY,
    split_trial_config,
)
from avasr.train import METRICS_FILE, fit, load_datasets

DRIVER_CPU = 0.01  # the Tune function's share of a trial's CPUs (Tune refuses a trial with no resources)
WORK_DIR_PREFIX = "avasr-trial-"  # a Train worker's folder in the node's temp dir: avasr-trial-<pid>@<host>-<random>
CHECKPOINTS_TO_KEEP = 2  # each holds last.pth and best_model.pth, which is all a resume needs
# Ray Train's controller takes one report per poll of its workers (2 s by default) and a worker's report waits
# until the previous one is taken: epochs shorter than the poll were held to it, and a trial ended two polls after
# its last epoch (benchmarks/sweep_overhead.py: ~12 s a trial of 10 smoke epochs). Ray passes it to the controller.
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 0.2
# How long Train's controller waits for its worker group's placement group; the sweep sets it from
# SweepOptions.resource_wait_s. Train retries a failed start (a timeout, a worker dying as it starts) without limit
# by default ("max allowed: inf"): after CONTROLLER_RETRIES the trial fails instead, naming who holds the
# resources, so one Tune attempt waits at most (1 + CONTROLLER_RETRIES) x resource_wait_s (Tune reruns it once).
WORKER_START_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
CONTROLLER_RETRIES = 1
# Train starts a PreemptionWatcher actor beside every worker group to restart training when a node is drained. A
# sweep on one machine has no other node to move to; there the actor only costs CPU: 5.7 CPU s per smoke trial, its
# process's start and its idle wake-ups (benchmarks/sweep_cpu.py). Ray passes it to the controller.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# A worker's MLflow calls must not hold training up while a tracking server is down or hangs (MLflow's defaults
# retry for minutes): one try of at most a few seconds, then the epochs wait in EpochLog.pending, and the store
# is tried again only after MLFLOW_RETRY_AFTER_S.
WORKER_MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
MLFLOW_RETRY_AFTER_S = 15.0
UNLOGGED_FIELDS = ("output_dir", "extra")  # a worker's temporary folder; free-form tags


class InjectedFailure(AvasrError, RuntimeError):
    """Raised on purpose by a trial whose config has `fail_at_epoch` (tests of retries)."""


@dataclass(frozen=True)
class TrialContext:
    """What every Tune function needs from the driver (passed with tune.with_parameters)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    corpus_id: str
    train_storage: str  # Train runs live here, one folder per trial id: a rerun trial finds its checkpoints
    cpus: float
    gpus: float
    max_failures: int
    resource_wait_s: float  # a Train run that gets no worker resources within this fails with who holds them
    mlflow_wait_s: float  # how long a trial waits for a tracking server that is down before it fails
    watch_preemption: bool = True  # False on one machine (see PREEMPTION_WATCHER_ENV)


# --- the Train worker --------------------------------------------------------------------------------------------
class EpochLog:
    """Rank 0's per-epoch curves in MLflow, each epoch once and never in training's way.

    Once: a retried worker may train again epochs it logged before its crash (killed before Ray had its
    checkpoint): steps the run already holds are skipped. Out of the way: an epoch the store refuses (a tracking
    server that is down) waits in `pending` and goes with the next epoch that gets through; epochs still pending
    when training ends are logged by the driver from the checkpoint's metrics.csv (tracking.log_missing_epochs).
    """

    def __init__(self, client: MlflowClient | None, run_id: str | None, retry_after_s: float = MLFLOW_RETRY_AFTER_S):
        self.client, self.run_id, self.retry_after_s = client, run_id, retry_after_s
        self.pending: list[dict] = []
        self.logged: set[int] | None = None  # steps the run holds: read before the first epoch and after a failure
        self.next_try = 0.0  # time.monotonic() before which the store is not tried again

    def __call__(self, metrics: dict) -> None:
        if self.client is None:
            return
        self.pending.append({k: metrics[k] for k in ("epoch", *tracking.EPOCH_METRICS)})
        if time.monotonic() < self.next_try:
            return
        try:
            if self.logged is None:  # a batch whose answer was lost may have been stored after all
                self.logged = tracking.logged_epochs(self.client, self.run_id)
            for row in list(self.pending):
                if row["epoch"] not in self.logged:
                    tracking.log_epoch(self.client, self.run_id, row)
                    self.logged.add(row["epoch"])
                self.pending.remove(row)
        except Exception as e:  # noqa: BLE001 - MLflow's and requests' errors alike: none may stop training
            self.logged, self.next_try = None, time.monotonic() + self.retry_after_s
            print(
                f"avasr: MLflow refused epoch {self.pending[0]['epoch']} ({type(e).__name__}); "
                f"{len(self.pending)} epoch(s) wait for the store"
            )


def make_work_dir(root: Path | None = None) -> Path:
    """A new folder for this worker's training files, named after its process and host. Folders of workers of
    this host that died without running their `finally` (SIGKILL, the OOM killer) are removed first: on a cluster
    node every killed trial would otherwise leave its checkpoints in /tmp. The host is in the name because a temp
    dir shared by several hosts (containers) would hold pids that mean nothing here."""
    root = Path(root or tempfile.gettempdir())
    host = socket.gethostname()
    for folder in root.glob(f"{WORK_DIR_PREFIX}*@{host}-*"):
        pid = folder.name[len(WORK_DIR_PREFIX) :].split("@", 1)[0]
        ours = pid.isdigit() and folder.name.startswith(f"{WORK_DIR_PREFIX}{pid}@{host}-")
        if ours and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)  # another user's folder stays: not ours to remove
    return Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}@{host}-", dir=root))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def train_func(config: dict) -> None:
    """The Ray Train worker: avasr.train.fit in a temporary folder, each epoch reported with its checkpoint.

    A retry or a restored sweep starts from the last reported checkpoint: its files are copied back (metrics.csv
    keeps every epoch) and fit continues from its last.pth.
    """
    base, sweep = split_trial_config(config)
    torch.set_num_threads(sweep.get(THREADS_KEY, 1))
    work_dir = make_work_dir()
    base = base.replace(output_dir=str(work_dir))
    resume = None
    checkpoint = ray.train.get_checkpoint()  # Ray: the latest reported checkpoint, None on a first attempt
    if checkpoint is not None:
        checkpoint.to_directory(str(work_dir))  # Ray
        resume = work_dir / LAST_CHECKPOINT
    rank_zero = ray.train.get_context().get_world_rank() == 0  # Ray
    tracked = rank_zero and sweep.get(MLFLOW_URI_KEY)
    log_epoch = EpochLog(MlflowClient(sweep[MLFLOW_URI_KEY]) if tracked else None, sweep.get(MLFLOW_RUN_KEY))

    reported = []

    def report(metrics: dict, checkpoint_dir: Path) -> None:
        log_epoch(metrics)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)))  # Ray
        reported.append(metrics["epoch"])
        if resume is None and metrics["epoch"] == sweep.get(FAIL_AT_EPOCH):
            raise InjectedFailure(f"fail_at_epoch={metrics['epoch']}: failing once after this epoch's checkpoint")

    try:
        fit(base, datasets=load_datasets(base), report=report, resume=resume)
        if resume is not None and not reported:  # rerun after its training had ended (a driver killed before Tune
            # saved the trial as done): Tune needs a result with the scheduler's metric, or it fails the sweep
            last = tracking.read_metrics_csv(work_dir / METRICS_FILE)[-1]
            ray.train.report(
                {**last, "epoch": int(last["epoch"])},  # Ray
                checkpoint=ray.train.Checkpoint.from_directory(str(work_dir)),
            )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # everything worth keeping went into the reported checkpoints


# --- the Tune function -------------------------------------------------------------------------------------------
def trial_run_name(config: Config, trial_id: str) -> str:
    return f"{config.fusion}-do{config.dropout:g}-lr{config.lr:.1e}-s{config.seed}-{trial_id}"


def trial_params(config: Config, corpus_id: str, trial_id: str, sweep: dict | None = None) -> dict:
    """The trial's MLflow params: its Config fields (flat), the corpus, its id, and its configuration's id and
    label (the runs table groups seeds by the label)."""
    values = {k: v for k, v in config.to_dict().items() if k not in UNLOGGED_FIELDS}
    sweep = sweep or {}
    return {
        **values,
        "corpus_id": corpus_id,
        "trial_id": trial_id,
        CONFIG_ID_KEY: sweep.get(CONFIG_ID_KEY) or trial_id,
        CONFIG_LABEL_KEY: sweep.get(CONFIG_LABEL_KEY) or trial_id,
    }


def run_trial(config: dict, context: TrialContext) -> None:
    """One trial: its MLflow child run (found again when the trial is rerun), then one Ray Train run to the end."""
    trial_id = tune.get_context().get_trial_id()  # Ray Tune
    base, sweep = split_trial_config(config)
    tracking.wait_for_store(context.tracking_uri, context.mlflow_wait_s)  # bounded: MLflow's own retries are not
    client = MlflowClient(context.tracking_uri)
    run_id = tracking.child_run(
        client,
        context.experiment_id,
        context.parent_run_id,
        trial_id,
        trial_run_name(base, trial_id),
        trial_params(base, context.corpus_id, trial_id, sweep),
    )
    worker_config = {
        **config,
        MLFLOW_URI_KEY: context.tracking_uri,
        MLFLOW_RUN_KEY: run_id,
        THREADS_KEY: max(1, math.floor(context.cpus)),
    }
    worker_resources = {"CPU": context.cpus - DRIVER_CPU, **({"GPU": context.gpus} if context.gpus else {})}
    os.environ.setdefault(TRAIN_POLL_ENV, str(TRAIN_POLL_S))  # a value set by the user wins
    os.environ[WORKER_START_ENV] = str(context.resource_wait_s)  # Ray passes these to the controller
    if not context.watch_preemption:
        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    trainer = TorchTrainer(  # Ray Train: one worker runs the one training loop
        train_func,
        train_loop_config=worker_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=context.gpus > 0, resources_per_worker=worker_resources
        ),
        run_config=ray.train.RunConfig(
            name=trial_id,  # stable: a rerun or restored trial resumes from this run's checkpoints
            storage_path=context.train_storage,
            callbacks=[TuneReportCallback()],  # forwards each report to Tune (and so to ASHA)
            failure_config=ray.train.FailureConfig(
                max_failures=context.max_failures, controller_failure_limit=CONTROLLER_RETRIES
            ),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
            # TQDM: Tune already prints every epoch
            worker_runtime_env={"env_vars": {"TQDM_DISABLE": "1", **WORKER_MLFLOW_ENV}},
        ),
    )
    try:
        trainer.fit()
    except ControllerError as e:
        if not isinstance(e.controller_failure, WorkerGroupStartupTimeoutError):
            raise
        raise ResourcesError(
            f"trial {trial_id}: its Train worker got no {worker_resources} in {1 + CONTROLLER_RETRIES} waits of "
            f"{context.resource_wait_s:g} s (--resource-wait-s): {who_holds('GPU' if context.gpus else 'CPU')}"
        ) from None
