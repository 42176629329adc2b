"""The fusion sweep: Ray Tune over Ray Train trials, every trial tracked in MLflow, the best one shipped as ONNX.

Three layers, three processes per trial:

    run_sweep (the driver)      MLflow parent run, feature cache warmed, Tuner, then every trial finalised
      run_trial (Tune function) the trial's MLflow child run and params, then one TorchTrainer.fit()
        train_func (Train worker) avasr.train.fit, reporting each epoch's metrics and checkpoint to Ray

Who writes to MLflow, and when (SQLite takes one writer per run; runs never see two writers at a time):
- the driver creates the database, the experiment and the parent run before any trial starts, and writes the
  parent run only;
- the Tune function creates its trial's child run and logs its params before training starts;
- the rank-0 Train worker logs the per-epoch curves (`epoch/val_wer`, ... with step = epoch; the plain names
  `val_wer`, `val_cer` hold the best epoch's values, the checkpoint that ships, for MLflow's tables and compare
  views). It is the only process that holds an epoch's metrics as they happen (the Tune function is blocked in
  `fit()`), so the MLflow UI follows a trial live. It logs an epoch after its checkpoint is written and before
  reporting it to Ray, so a retry that resumes from the last reported checkpoint logs the following epochs exactly
  once (the rare crash between the two re-logs the same step with the same values: resume is exact);
- after all trials end, the driver finalises each child run one after another: best-epoch metrics (`val_wer`,
  `val_cer`, `param_count`), the training-curve plot, ONNX export and CPU latency (`cpu_latency_ms_p50/p95`).
  Latency is measured there, not in the trials, so that every trial is timed on the same node with no training
  running beside it; and trials stopped by ASHA, whose Tune function is killed, get their final metrics too.

Resources: a trial holds `cpus_per_trial` CPUs in all: a sliver for its mostly idle Tune function and the rest
for its one Train worker (Train's controller takes none). Concurrency = CPUs // cpus_per_trial (and GPUs //
gpus_per_trial on a GPU cluster), so trials never wait on each other's resources: a 2-CPU machine runs two.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import ray
import ray.train
import torch
from mlflow import MlflowClient
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.sample import Categorical, Domain, Float, Integer
from tqdm.auto import tqdm

from avasr import tracking
from avasr.config import Config, ConfigError
from avasr.data.noise import NoiseError
from avasr.data.noisy import NoiseSpec
from avasr.evaluation import evaluate_checkpoint
from avasr.export import ExportError, ParityError, check_parity, export_onnx, register_onnx
from avasr.latency import onnx_cpu_latency
from avasr.train import (BEST_CHECKPOINT, LAST_CHECKPOINT, LOG_FILE, METRICS_FILE, fit, load_checkpoint, load_datasets,
                         load_model)

PROJECT_DIR = Path(__file__).resolve().parents[1]
SPACES_DIR = PROJECT_DIR / "tune_spaces"
DEFAULT_EXPERIMENT = "avasr-fusion"
DEFAULT_MAX_PARAMS = 5_000_000  # the model's size budget
DEFAULT_MAX_LATENCY_MS = 100.0  # p50, batch 1, 5 s input, one thread: the default model takes ~35 ms on this CPU
SCHEDULERS = ("asha", "fifo")
# ASHA compares trials on the val loss: every trial's WER sits at 1.0 in the first epochs (blank-only output), so
# a WER ranking would stop trials at random. The best run is still chosen by WER.
SCHEDULER_METRIC = "val_loss"
SCHEDULER_TIME_ATTR = "epoch"  # not training_iteration: it keeps counting right across retries and restores
DRIVER_CPU = 0.01  # the Tune function's share of a trial's CPUs (Tune refuses a trial with no resources)
TRIAL_DRIVER_RETRIES = 1  # a Tune function lost with its node is rerun once; worker errors are Train's business
CHECKPOINTS_TO_KEEP = 2  # each holds last.pth and best_model.pth, which is all a resume needs
# Ray Train's controller takes one report per poll of its workers (2 s by default) and a worker's report waits
# until the previous one is taken: epochs shorter than the poll were held to it, and a trial ended two polls after
# its last epoch (benchmarks/sweep_overhead.py: ~12 s a trial of 10 smoke epochs). Ray passes it to the controller.
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 0.2
STATE_FILE = "avasr_sweep.json"  # parent run and store of a sweep, read back by --resume
ONNX_FOLDER = "onnx"
CHAMPION_ONNX = "champion.onnx"
PLOT_FILE = "training_curves.png"
EPOCH_METRICS = ("train_loss", "val_loss", "val_wer", "val_cer", "lr", "seconds")
TAG_MAX_CHARS = 5000  # MLflow's limit on a tag value
CHECKPOINT_TAG, ONNX_TAG, FINAL_TAG = "avasr.checkpoint", "avasr.onnx", "avasr.finalised"
NOISY_VAL_METRIC = "val_wer_snr0_babble"  # the best checkpoint's val WER in babble at 0 dB, one fixed draw
NOISY_VAL_NOISE = NoiseSpec("babble", snr_db=0.0, seed=0)

# Keys a trial's config may carry besides Config fields. FAIL_AT_EPOCH may come from a space (fault injection);
# the others are added by the Tune function for its worker.
FAIL_AT_EPOCH = "fail_at_epoch"
MLFLOW_URI_KEY, MLFLOW_RUN_KEY, THREADS_KEY = "mlflow_uri", "mlflow_run_id", "torch_threads"
SWEEP_ONLY_KEYS = (FAIL_AT_EPOCH, MLFLOW_URI_KEY, MLFLOW_RUN_KEY, THREADS_KEY)
SET_BY_SWEEP = ("train_manifest", "val_manifest", "output_dir", "cache_dir")
UNLOGGED_FIELDS = ("output_dir", "extra")  # a worker's temporary folder; free-form tags


class SweepError(RuntimeError):
    """A sweep that cannot start or be resumed as asked: bad space, too few resources, existing folder."""


class InjectedFailure(RuntimeError):
    """Raised on purpose by a trial whose config has `fail_at_epoch` (tests of retries)."""


# --- options and results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepOptions:
    train_manifest: str
    val_manifest: str
    space: str = "smoke"  # a file name in tune_spaces/ or a path to a space file
    name: str = "fusion-sweep"  # the sweep's folder under storage_path, and the parent run's name
    storage_path: str = "outputs/sweeps"  # every node must reach it on a cluster (NFS, S3, ...)
    mlflow_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite in the project folder
    experiment: str = DEFAULT_EXPERIMENT
    address: str | None = None  # Ray cluster ("auto", "ray://host:10001"); None starts a local one
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: one per trial when the cluster has GPUs, else none
    max_failures: int = 2  # worker failures a trial recovers from (from its last checkpoint)
    scheduler: str = "asha"
    num_samples: int | None = None  # overrides the space's NUM_SAMPLES
    seed: int = 42  # the trials' seed unless the space sets one
    cache_dir: str = "data/cache"  # feature cache: warmed once by the driver, read by every trial
    max_params: int = DEFAULT_MAX_PARAMS
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS
    ship: bool = True  # export the best run, check parity, register it as avasr@champion
    resume: bool = False  # continue an interrupted sweep of the same name


@dataclass(frozen=True)
class TrialSummary:
    run_id: str
    trial_id: str
    status: str  # MLflow's: FINISHED, FAILED, RUNNING
    fusion: str
    dropout: float
    lr: float
    val_wer: float  # best epoch's; nan when no epoch finished
    val_cer: float
    param_count: int
    latency_p50_ms: float  # nan when the export failed
    latency_p95_ms: float
    checkpoint: str  # folder with best_model.pth; "" when none
    onnx_path: str

    @classmethod
    def from_run(cls, run) -> "TrialSummary":
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        return cls(
            run_id=run.info.run_id, trial_id=tags.get(tracking.TRIAL_TAG, ""), status=run.info.status,
            fusion=params.get("fusion", "?"), dropout=float(params.get("dropout", "nan")),
            lr=float(params.get("lr", "nan")), val_wer=metrics.get("val_wer", math.nan),
            val_cer=metrics.get("val_cer", math.nan), param_count=int(metrics.get("param_count", 0)),
            latency_p50_ms=metrics.get("cpu_latency_ms_p50", math.nan),
            latency_p95_ms=metrics.get("cpu_latency_ms_p95", math.nan),
            checkpoint=tags.get(CHECKPOINT_TAG, ""), onnx_path=tags.get(ONNX_TAG, ""),
        )


@dataclass(frozen=True)
class SweepResult:
    experiment_path: Path  # Tune's experiment folder (pass the same name with --resume)
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials: tuple[TrialSummary, ...]
    champion: TrialSummary | None
    onnx_path: Path | None  # the champion's ONNX file
    model_version: str | None  # its version of the registered model avasr (alias champion)
    interrupted: bool  # some trials never ended: run again with resume=True
    ship_error: str | None = None  # why the champion was not registered (ONNX parity failed)


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


# --- search spaces -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpace:
    path: Path
    space: dict
    num_samples: int = 1
    asha: dict = field(default_factory=dict)


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.py") if not p.stem.startswith("_"))


def space_path(name_or_path: str) -> Path:
    """A name of tune_spaces/ or a path to a .py file; an unknown name lists the valid ones."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".py" or candidate.parent != Path("."):
        if not candidate.is_file():
            raise SweepError(f"{candidate}: no such space file")
        return candidate.resolve()
    path = SPACES_DIR / f"{name_or_path}.py"
    if not path.is_file():
        raise SweepError(f"unknown space {name_or_path!r}: choose from {', '.join(available_spaces())} "
                         f"(files in {SPACES_DIR}) or give a path to a space file")
    return path


def load_space(name_or_path: str) -> SearchSpace:
    """Import a space file by path (tune_spaces/ is not an installed package) and validate every value in it."""
    path = space_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"avasr_space_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a space is user code: say which file broke
        raise SweepError(f"{path}: cannot load the space: {type(e).__name__}: {e}") from e
    if not isinstance(getattr(module, "SPACE", None), dict):
        raise SweepError(f"{path}: a space file must define SPACE = {{...}} (see tune_spaces/__init__.py)")
    space = SearchSpace(path, dict(module.SPACE), int(getattr(module, "NUM_SAMPLES", 1)),
                        dict(getattr(module, "ASHA", {})))
    validate_space(space)
    return space


def candidate_values(value) -> list:
    """Representative values of a space entry: every grid or choice value, both bounds of a range."""
    if isinstance(value, dict) and set(value) == {"grid_search"}:
        return list(value["grid_search"])
    if isinstance(value, Categorical):
        return list(value.categories)
    if isinstance(value, (Float, Integer)):
        return [value.lower, value.upper]
    if isinstance(value, Domain):
        return []  # sample_from and the like: only Ray can draw them
    return [value]


def validate_space(space: SearchSpace) -> None:
    """Every candidate value through Config.from_dict: unknown fields and fusions are named with the valid ones."""
    where = space.path
    fields = {k: v for k, v in space.space.items() if k not in SWEEP_ONLY_KEYS}
    owned = sorted(set(fields) & set(SET_BY_SWEEP))
    if owned:
        raise SweepError(f"{where}: {', '.join(owned)} are set by the sweep (its options), not by a space")
    if "epochs" in fields and candidate_values(fields["epochs"]) != [fields["epochs"]]:
        raise SweepError(f"{where}: epochs must be a fixed number (ASHA stops trials within it)")
    candidates = {k: candidate_values(v) for k, v in fields.items()}
    base = {k: values[0] for k, values in candidates.items() if values}
    for key, values in candidates.items():
        for value in values:
            try:
                Config.from_dict({**base, key: value})
            except ConfigError as e:
                raise SweepError(f"{where}: {e}") from None
    if space.num_samples < 1:
        raise SweepError(f"{where}: NUM_SAMPLES must be at least 1, got {space.num_samples}")


# --- resources ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialResources:
    cpus: float  # per trial, Tune function included
    gpus: float  # per trial (its Train worker's)
    concurrency: int

    @property
    def use_gpu(self) -> bool:
        return self.gpus > 0


def plan_resources(cluster: dict[str, float], cpus_per_trial: float, gpus_per_trial: float | None) -> TrialResources:
    """Trials that fit side by side in `cluster` (ray.cluster_resources()); refuses what would wait forever."""
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    gpus_per_trial = (1.0 if gpus >= 1 else 0.0) if gpus_per_trial is None else gpus_per_trial
    if cpus_per_trial <= DRIVER_CPU:
        raise SweepError(f"cpus_per_trial must be more than {DRIVER_CPU}, got {cpus_per_trial}")
    if cpus_per_trial > cpus:
        raise SweepError(f"a trial needs {cpus_per_trial:g} CPUs but the Ray cluster has {cpus:g}: lower "
                         "--cpus-per-trial or add nodes")
    if gpus_per_trial > gpus:
        raise SweepError(f"a trial needs {gpus_per_trial:g} GPUs but the Ray cluster has {gpus:g}: pass "
                         "--gpus-per-trial 0 to train on CPUs")
    concurrency = math.floor(cpus / cpus_per_trial + 1e-9)
    if gpus_per_trial > 0:
        concurrency = min(concurrency, math.floor(gpus / gpus_per_trial + 1e-9))
    return TrialResources(cpus_per_trial, gpus_per_trial, concurrency)


# --- the Train worker --------------------------------------------------------------------------------------------
def split_trial_config(config: dict) -> tuple[Config, dict]:
    """A trial's dict -> (Config, the sweep-only keys)."""
    sweep = {k: config[k] for k in SWEEP_ONLY_KEYS if k in config}
    return Config.from_dict({k: v for k, v in config.items() if k not in SWEEP_ONLY_KEYS}), sweep


def train_func(config: dict) -> None:
    """The Ray Train worker: avasr.train.fit in a temporary folder, each epoch reported with its checkpoint.

    A retry or a restored sweep starts from the last reported checkpoint: its files are copied back (metrics.csv
    keeps every epoch) and fit continues from its last.pth.
    """
    base, sweep = split_trial_config(config)
    torch.set_num_threads(sweep.get(THREADS_KEY, 1))
    work_dir = Path(tempfile.mkdtemp(prefix="avasr-trial-"))
    base = base.replace(output_dir=str(work_dir))
    resume = None
    checkpoint = ray.train.get_checkpoint()  # Ray: the latest reported checkpoint, None on a first attempt
    if checkpoint is not None:
        checkpoint.to_directory(str(work_dir))  # Ray
        resume = work_dir / LAST_CHECKPOINT
    rank_zero = ray.train.get_context().get_world_rank() == 0  # Ray
    client = MlflowClient(sweep[MLFLOW_URI_KEY]) if rank_zero and sweep.get(MLFLOW_URI_KEY) else None

    def report(metrics: dict, checkpoint_dir: Path) -> None:
        if client is not None:
            tracking.log_metrics(client, sweep[MLFLOW_RUN_KEY], {k: metrics[k] for k in EPOCH_METRICS},
                                 step=metrics["epoch"], prefix=tracking.EPOCH_PREFIX)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)))  # Ray
        if resume is None and metrics["epoch"] == sweep.get(FAIL_AT_EPOCH):
            raise InjectedFailure(f"fail_at_epoch={metrics['epoch']}: failing once after this epoch's checkpoint")

    try:
        fit(base, datasets=load_datasets(base), report=report, resume=resume)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # everything worth keeping went into the reported checkpoints


# --- the Tune function -------------------------------------------------------------------------------------------
def trial_run_name(config: Config, trial_id: str) -> str:
    return f"{config.fusion}-do{config.dropout:g}-lr{config.lr:.1e}-{trial_id}"


def trial_params(config: Config, corpus_id: str, trial_id: str) -> dict:
    values = {k: v for k, v in config.to_dict().items() if k not in UNLOGGED_FIELDS}
    return {**values, "corpus_id": corpus_id, "trial_id": trial_id}


def run_trial(config: dict, context: TrialContext) -> None:
    """One trial: its MLflow child run (found again when the trial is rerun), then one Ray Train run to the end."""
    trial_id = tune.get_context().get_trial_id()  # Ray Tune
    base, sweep = split_trial_config(config)
    client = MlflowClient(context.tracking_uri)
    run_id = tracking.child_run(client, context.experiment_id, context.parent_run_id, trial_id,
                                trial_run_name(base, trial_id), trial_params(base, context.corpus_id, trial_id))
    worker_config = {**config, MLFLOW_URI_KEY: context.tracking_uri, MLFLOW_RUN_KEY: run_id,
                     THREADS_KEY: max(1, math.floor(context.cpus))}
    worker_resources = {"CPU": context.cpus - DRIVER_CPU, **({"GPU": context.gpus} if context.gpus else {})}
    os.environ.setdefault(TRAIN_POLL_ENV, str(TRAIN_POLL_S))  # a value set by the user wins
    trainer = TorchTrainer(  # Ray Train: one worker runs the one training loop
        train_func,
        train_loop_config=worker_config,
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=context.gpus > 0,
                                               resources_per_worker=worker_resources),
        run_config=ray.train.RunConfig(
            name=trial_id,  # stable: a rerun or restored trial resumes from this run's checkpoints
            storage_path=context.train_storage,
            callbacks=[TuneReportCallback()],  # forwards each report to Tune (and so to ASHA)
            failure_config=ray.train.FailureConfig(max_failures=context.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
            worker_runtime_env={"env_vars": {"TQDM_DISABLE": "1"}},  # Tune already prints every epoch
        ),
    )
    trainer.fit()


# --- after the trials: final metrics, choice, shipping -----------------------------------------------------------
def sweep_interrupted(experiment_path: Path) -> bool:
    """True when some trial was still pending or running in Tune's last saved state.

    Tune saves its state and only then marks every trial TERMINATED while it stops an interrupted sweep, so the
    results it returns cannot tell an interrupted sweep from a finished one; the saved state can.
    """
    trials = tune.ExperimentAnalysis(str(experiment_path)).trials
    return any(t.status not in ("TERMINATED", "ERROR") for t in trials)


def latest_checkpoint(result, train_storage: str | Path) -> Path | None:
    """The last checkpoint reported to Tune; else the newest in the trial's Train run folder (a rerun trial whose
    training had already ended reports nothing new)."""
    if result is None:
        return None
    reported = result.metrics.get("checkpoint_path")
    if reported:
        return Path(reported)
    folders = sorted(Path(train_storage, result.metrics["trial_id"]).glob("checkpoint_*"))  # named by time
    complete = [f for f in folders if (f / BEST_CHECKPOINT).is_file() and (f / METRICS_FILE).is_file()]
    return complete[-1] if complete else None


def finalise_trial(client: MlflowClient, run_id: str, result, train_storage: str | Path, onnx_dir: Path) -> None:
    """Best-epoch metrics, curves, ONNX latency into a child run, then close it. Idempotent (resumed sweeps)."""
    run = client.get_run(run_id)
    if run.data.tags.get(FINAL_TAG) == "true":
        return
    folder = latest_checkpoint(result, train_storage)
    if result is None or result.error is not None or folder is None:
        reason = "no result" if result is None else str(result.error or "no epoch finished")
        tracking.set_tags(client, run_id, {tracking.ERROR_TAG: reason[:TAG_MAX_CHARS], FINAL_TAG: "true"})
        client.set_terminated(run_id, "FAILED")
        return
    checkpoint = load_checkpoint(folder / BEST_CHECKPOINT)
    best = checkpoint["best_metrics"]
    rows = tracking.read_metrics_csv(folder / METRICS_FILE)
    final = {"val_wer": best["val_wer"], "val_cer": best["val_cer"], "val_loss": best["val_loss"],
             "param_count": best["param_count"], "best_epoch": best["epoch"], "epochs_trained": rows[-1]["epoch"]}
    tags = {CHECKPOINT_TAG: folder}
    with tempfile.TemporaryDirectory() as tmp:
        plot = tracking.plot_training_curves(rows, Path(tmp) / PLOT_FILE, run.info.run_name)
        client.log_artifact(run_id, str(plot), "plots")
    for name in (METRICS_FILE, LOG_FILE):
        client.log_artifact(run_id, str(folder / name), "training")
    onnx_path = onnx_dir / f"{result.metrics['trial_id']}.onnx"
    try:
        model, config = load_model(folder / BEST_CHECKPOINT)
        export_onnx(model, config, onnx_path)
        latency = onnx_cpu_latency(onnx_path)
        final |= {"cpu_latency_ms_p50": latency["p50_ms"], "cpu_latency_ms_p95": latency["p95_ms"]}
        tags[ONNX_TAG] = onnx_path
    except ExportError as e:  # the run stays comparable; without a latency it cannot be chosen
        tags[tracking.ERROR_TAG] = str(e)[:TAG_MAX_CHARS]
    try:  # same val utterances, noise and draw for every trial: the metric compares trials' robustness
        noisy = evaluate_checkpoint(folder / BEST_CHECKPOINT, checkpoint["config"]["val_manifest"],
                                    snr_db=NOISY_VAL_NOISE.snr_db, noise=NOISY_VAL_NOISE.kind,
                                    noise_seed=NOISY_VAL_NOISE.seed)
        final[NOISY_VAL_METRIC] = noisy["wer"]
    except NoiseError as e:  # e.g. a one-utterance val set has nobody to babble: the run stays comparable
        tags[tracking.ERROR_TAG] = "; ".join(filter(None, [tags.get(tracking.ERROR_TAG), str(e)]))[:TAG_MAX_CHARS]
    tracking.log_metrics(client, run_id, final, step=int(final["epochs_trained"]))
    tracking.set_tags(client, run_id, {**tags, FINAL_TAG: "true"})
    client.set_terminated(run_id, "FINISHED")


def choose_best(runs, max_params: int = DEFAULT_MAX_PARAMS,
                max_latency_ms: float = DEFAULT_MAX_LATENCY_MS) -> TrialSummary | None:
    """Lowest val WER among runs within both budgets (params < max_params, p50 <= max_latency_ms).

    Ties go to the lower CER, then the faster model. Runs without a WER or a latency are never chosen.
    """
    eligible = [r for r in runs if math.isfinite(r.val_wer) and r.param_count < max_params
                and math.isfinite(r.latency_p50_ms) and r.latency_p50_ms <= max_latency_ms]
    return min(eligible, key=lambda r: (r.val_wer, r.val_cer, r.latency_p50_ms), default=None)


def ship(champion: TrialSummary, tracking_uri: str, destination: Path) -> tuple[Path, str]:
    """The champion's ONNX -> parity with PyTorch (raises ParityError) -> registered avasr@champion."""
    model, _ = load_model(Path(champion.checkpoint) / BEST_CHECKPOINT)
    report = check_parity(model, champion.onnx_path)
    shutil.copyfile(champion.onnx_path, destination)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)  # register_onnx works on MLflow's current tracking (and registry) URI
    try:
        version = register_onnx(destination, run_id=champion.run_id,
                                metrics={"onnx_parity_max_abs_diff": report.max_abs_diff})
    finally:
        mlflow.set_tracking_uri(previous)
    return destination, str(version.version)


def leaderboard(trials, champion: TrialSummary | None = None) -> str:
    """A text table of the trials, best val WER first; `*` marks the champion."""
    header = f"{'':1} {'fusion':<10} {'dropout':>7} {'lr':>9} {'WER':>6} {'CER':>6} {'params':>9} {'p50 ms':>7} status"
    lines = [header, "-" * len(header)]
    for t in sorted(trials, key=lambda t: (math.isnan(t.val_wer), t.val_wer, t.val_cer)):
        mark = "*" if champion is not None and t.run_id == champion.run_id else ""
        lines.append(f"{mark:1} {t.fusion:<10} {t.dropout:>7.3g} {t.lr:>9.2e} {t.val_wer:>6.3f} {t.val_cer:>6.3f} "
                     f"{t.param_count:>9,} {t.latency_p50_ms:>7.1f} {t.status}")
    return "\n".join(lines)


# --- the driver --------------------------------------------------------------------------------------------------
def corpus_id(train_manifest: Path, val_manifest: Path) -> str:
    """The built-in corpus's own id (its corpus.json), else the folder name and a hash of both manifests."""
    description = train_manifest.parent / "corpus.json"
    if description.is_file():
        found = json.loads(description.read_text(encoding="utf-8")).get("id")
        if found:
            return str(found)
    digest = hashlib.sha256(train_manifest.read_bytes() + val_manifest.read_bytes()).hexdigest()[:12]
    return f"{train_manifest.parent.name}-{digest}"


def warm_feature_cache(config: Config) -> None:
    """Featurise every utterance once, in parallel, before trials start: they then all read the cache.

    Also reports bad manifests (naming file and line) before any trial is scheduled.
    """
    train_set, val_set = load_datasets(config.replace(data_workers=0))
    print(f"data: train {train_set.report.summary()}; val {val_set.report.summary()}")


def base_trial_config(options: SweepOptions, space: SearchSpace) -> dict:
    """Fixed values every trial gets, under the space's own: absolute paths (Ray runs trials in other folders)."""
    return {
        "train_manifest": str(Path(options.train_manifest).resolve()),
        "val_manifest": str(Path(options.val_manifest).resolve()),
        "cache_dir": str(Path(options.cache_dir).resolve()) if options.cache_dir else "",
        "data_workers": 1,  # the cache is warm: one process reads it
        "seed": options.seed,
        **space.space,
    }


def fixed_values(param_space: dict) -> dict:
    """The Config fields a space does not vary (what the driver can know before trials are drawn)."""
    def varies(value) -> bool:
        return isinstance(value, Domain) or (isinstance(value, dict) and "grid_search" in value)

    return {k: v for k, v in param_space.items() if k not in SWEEP_ONLY_KEYS and not varies(v)}


def make_scheduler(options: SweepOptions, space: SearchSpace, epochs: int):
    if options.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr=SCHEDULER_TIME_ATTR, max_t=epochs,
                         **{"grace_period": 1, "reduction_factor": 2, **space.asha})


def open_parent_run(client: MlflowClient, options: SweepOptions, experiment_path: Path, tracking_uri: str,
                    space: SearchSpace, corpus: str) -> tuple[str, str]:
    """(experiment id, parent run id): new, or read back from the sweep's state file on resume."""
    state_file = experiment_path / STATE_FILE
    if options.resume:
        if not state_file.is_file():
            raise SweepError(f"{experiment_path}: nothing to resume (no {STATE_FILE}); run without --resume")
        state = json.loads(state_file.read_text())
        if state["tracking_uri"] != tracking_uri:
            raise SweepError(f"{state_file}: the sweep was tracked in {state['tracking_uri']}, not {tracking_uri}")
        client.update_run(state["parent_run_id"], status="RUNNING")
        return state["experiment_id"], state["parent_run_id"]
    if experiment_path.exists():
        raise SweepError(f"{experiment_path} already holds a sweep: pass --resume to continue it, or another --name")
    experiment_id = tracking.ensure_experiment(client, options.experiment, tracking_uri)
    params = {"space": space.path.stem, "num_samples": options.num_samples or space.num_samples,
              "scheduler": options.scheduler, "corpus_id": corpus, "seed": options.seed,
              "max_params": options.max_params, "max_latency_ms": options.max_latency_ms}
    parent = tracking.start_parent_run(client, experiment_id, options.name, params,
                                       {"avasr.space_file": str(space.path), "avasr.storage": str(experiment_path)})
    experiment_path.mkdir(parents=True)
    state = {"tracking_uri": tracking_uri, "experiment_id": experiment_id, "parent_run_id": parent}
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    return experiment_id, parent


def run_sweep(options: SweepOptions) -> SweepResult:
    """Run (or resume) a sweep, finalise every trial in MLflow, ship the best. See the module docstring."""
    if options.scheduler not in SCHEDULERS:
        raise SweepError(f"unknown scheduler {options.scheduler!r}: choose from {', '.join(SCHEDULERS)}")
    space = load_space(options.space)
    tracking_uri = tracking.resolve_tracking_uri(options.mlflow_uri, PROJECT_DIR)
    tracking.check_tracking_uri(tracking_uri)  # seconds, before Ray or any trial starts
    param_space = base_trial_config(options, space)
    base = Config.from_dict(fixed_values(param_space))
    corpus = corpus_id(Path(base.train_manifest), Path(base.val_manifest))
    storage = Path(options.storage_path).resolve()
    experiment_path = storage / options.name
    client = MlflowClient(tracking_uri)
    experiment_id, parent_run_id = open_parent_run(client, options, experiment_path, tracking_uri, space, corpus)

    try:  # the parent run must not stay RUNNING forever, whatever fails after it was opened
        interrupted = run_trials(options, space, param_space, base, tracking_uri, experiment_id, parent_run_id,
                                 corpus)
        trials = tuple(TrialSummary.from_run(r) for r in tracking.child_runs(client, experiment_id, parent_run_id))
        champion = choose_best(trials, options.max_params, options.max_latency_ms)
        onnx_path = version = ship_error = None
        if champion is not None and options.ship and not interrupted:
            try:
                onnx_path, version = ship(champion, tracking_uri, experiment_path / CHAMPION_ONNX)
            except ParityError as e:  # never register a model that disagrees with its checkpoint
                ship_error = str(e)
        close_parent_run(client, parent_run_id, trials, champion, interrupted, ship_error)
    except BaseException as e:
        client.set_terminated(parent_run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    return SweepResult(experiment_path, tracking_uri, experiment_id, parent_run_id, trials, champion, onnx_path,
                       version, interrupted, ship_error)


def run_trials(options: SweepOptions, space: SearchSpace, param_space: dict, base: Config, tracking_uri: str,
               experiment_id: str, parent_run_id: str, corpus: str) -> bool:
    """Ray up, cache warm, every trial run, then finalised in MLflow. Returns True when the sweep was interrupted."""
    storage = Path(options.storage_path).resolve()
    experiment_path = storage / options.name
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=options.address)
    try:
        resources = plan_resources(ray.cluster_resources(), options.cpus_per_trial, options.gpus_per_trial)
        print(f"{resources.concurrency} trial(s) at a time, {resources.cpus:g} CPU and {resources.gpus:g} GPU each")
        if base.cache_dir:
            warm_feature_cache(base)
        context = TrialContext(tracking_uri, experiment_id, parent_run_id, corpus,
                               str(experiment_path / "train_runs"), resources.cpus, resources.gpus,
                               options.max_failures)
        trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": DRIVER_CPU})
        grid = run_tuner(trainable, options, space, param_space, base.epochs, resources, storage)
        if sweep_interrupted(experiment_path):  # Tune stops gracefully on Ctrl-C and returns
            return True
        results = {r.metrics["trial_id"]: r for r in grid}
        client = MlflowClient(tracking_uri)
        children = tracking.child_runs(client, experiment_id, parent_run_id)
        for run in tqdm(children, desc="finalising trials", unit="trial"):
            trial_id = run.data.tags.get(tracking.TRIAL_TAG, "")
            try:
                finalise_trial(client, run.info.run_id, results.get(trial_id), context.train_storage,
                               experiment_path / ONNX_FOLDER)
            except Exception as e:  # one broken trial (corrupt checkpoint, ORT error) must not strand the others
                tracking.set_tags(client, run.info.run_id, {tracking.ERROR_TAG: repr(e)[:TAG_MAX_CHARS]})
                client.set_terminated(run.info.run_id, "FAILED")
        return False
    finally:
        if started_ray:
            ray.shutdown()


def run_tuner(trainable, options: SweepOptions, space: SearchSpace, param_space: dict, epochs: int,
              resources: TrialResources, storage: Path):
    experiment_path = storage / options.name
    if options.resume and tune.Tuner.can_restore(str(experiment_path)):
        tuner = tune.Tuner.restore(str(experiment_path), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric=SCHEDULER_METRIC, mode="min",
                                        scheduler=make_scheduler(options, space, epochs),
                                        num_samples=options.num_samples or space.num_samples,
                                        max_concurrent_trials=resources.concurrency,
                                        # one Tune function process for trial after trial: no interpreter start
                                        # and imports (~3 s) per trial; Tune starts a new one when a stopped
                                        # trial's function does not end within 2 s
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=options.name, storage_path=str(storage),
                                      failure_config=tune.FailureConfig(max_failures=TRIAL_DRIVER_RETRIES)),
        )
    return tuner.fit()


def close_parent_run(client: MlflowClient, run_id: str, trials, champion: TrialSummary | None,
                     interrupted: bool, ship_error: str | None = None) -> None:
    table = leaderboard(trials, champion)
    client.log_text(run_id, table + "\n", "leaderboard.txt")
    tracking.log_metrics(client, run_id, {"trials": len(trials),
                                          "failed_trials": sum(t.status == "FAILED" for t in trials)})
    if champion is not None:
        tracking.log_metrics(client, run_id, {"best_val_wer": champion.val_wer, "best_val_cer": champion.val_cer})
        tracking.set_tags(client, run_id, {"avasr.champion_run_id": champion.run_id,
                                           "avasr.champion_fusion": champion.fusion})
    if ship_error:
        tracking.set_tags(client, run_id, {tracking.ERROR_TAG: ship_error[:TAG_MAX_CHARS]})
    client.set_terminated(run_id, "KILLED" if interrupted else "FAILED" if ship_error else "FINISHED")
