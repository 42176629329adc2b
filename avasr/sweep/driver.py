"""The fusion sweep's driver: Ray Tune over Ray Train trials, every trial tracked in MLflow, the best one shipped.

Three layers, three processes per trial:

    run_sweep (the driver)      MLflow parent run, feature cache warmed, Tuner, then every trial finalised
      run_trial (Tune function) the trial's MLflow child run and params, then one TorchTrainer.fit() (sweep.trial)
        train_func (Train worker) avasr.train.fit, reporting each epoch's metrics and checkpoint to Ray

Who writes to MLflow, and when (SQLite takes one writer per run; runs never see two writers at a time):
- the driver creates the database, the experiment and the parent run before any trial starts, and writes the
  parent run only;
- the Tune function creates its trial's child run and logs its params before training starts;
- the rank-0 Train worker logs the per-epoch curves (`epoch/val_wer`, ... with step = epoch; the plain names
  `val_wer`, `val_cer` hold the best epoch's values, the checkpoint that ships, for MLflow's tables and compare
  views);
- after all trials end, the driver finalises each child run one after another (avasr.sweep.champion): best-epoch
  metrics, the training-curve plot, ONNX export and CPU latency, noisy WER, test WER; then closes the parent run
  with the leaderboard and the Pareto-front plot (avasr.sweep.leaderboard). The MLflow UI's saved view of the trials
  (avasr.sweep.mlflow_ui) is written when the parent run opens.

Resources: a trial holds `cpus_per_trial` CPUs in all: a sliver for its mostly idle Tune function and the rest
for its one Train worker (Train's controller takes none). Concurrency = CPUs // cpus_per_trial (and GPUs //
gpus_per_trial on a GPU cluster), so trials never wait on each other's resources: a 2-CPU machine runs two.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ray
from mlflow import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from tqdm.auto import tqdm

from avasr.checkpoint import BEST_CHECKPOINT, load_checkpoint, model_from_checkpoint
from avasr.config import Config
from avasr.corpus.splits import other_test_splits
from avasr.data.prepare import prepare, run_on_ray
from avasr.errors import AvasrError
from avasr.ship.export import ParityError, export_onnx
from avasr.ship.latency import onnx_cpu_latencies
from avasr.sweep import tracking
from avasr.sweep.champion import (
    CHAMPION_ONNX,
    DEFAULT_MAX_LATENCY_MS,
    DEFAULT_MAX_PARAMS,
    ERRORS_FOLDER,
    FINAL_TAG,
    SELECTION_METRICS,
    STORAGE_TAG,
    TAG_MAX_CHARS,
    TEST_MANIFEST_TAG,
    VAL_ERRORS,
    TrialSummary,
    as_latency_metrics,
    choose_best,
    finalise_trial,
    latency_metrics,
)
from avasr.sweep.leaderboard import leaderboard, leaderboard_table, pareto_front, plot_front
from avasr.sweep.mlflow_ui import SweepLinks, save_sweep_view, sweep_links, ui_url
from avasr.sweep.racing import Policy, race
from avasr.sweep.resources import inspectable, release_and_say, releasing_orphans, settle_job_resources
from avasr.sweep.shipping import ship
from avasr.sweep.significance import Scores, SignificanceError
from avasr.sweep.spaces import (
    CONFIG_ID_KEY,
    SCHEDULERS,
    VARIANT_KEY,
    SearchSpace,
    config_id,
    configurations,
    fixed_values,
    load_space,
    trial_variants,
    varies,
)
from avasr.sweep.trial import DRIVER_CPU, TrialContext, run_trial
from avasr.sweep.verdict import (
    PREFERENCES,
    VERDICT_JSON,
    VERDICT_MD,
    VERDICT_PLOT,
    Verdict,
    VerdictError,
    decide,
    group,
    plot_verdict,
    read_errors,
    trial_scores,
)
from avasr.sweep.verdict import (
    plot_front as plot_configuration_front,
)
from avasr.train import METRICS_FILE

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_EXPERIMENT = "avasr-fusion"
# ASHA compares trials on the val loss: every trial's WER sits at 1.0 in the first epochs (blank-only output), so
# a WER ranking would stop trials at random. The best run is still chosen by WER.
SCHEDULER_METRIC = "val_loss"
SCHEDULER_TIME_ATTR = "epoch"  # not training_iteration: it keeps counting right across retries and restores
TRIAL_DRIVER_RETRIES = 1  # a Tune function lost with its node is rerun once; worker errors are Train's business
STATE_FILE = "avasr_sweep.json"  # parent run and store of a sweep, read back by --resume
STATE_KEYS = ("tracking_uri", "experiment_id", "parent_run_id")
ONNX_FOLDER = "onnx"
LEADERBOARD_TEXT, LEADERBOARD_TABLE = "leaderboard.txt", "leaderboard.json"  # on the parent run
PARETO_PLOT = "pareto_front.png"  # in the parent run's plots/


class SweepError(AvasrError, RuntimeError):
    """A sweep that cannot start or be resumed as asked: too few resources, an existing folder, nothing to resume."""


# --- options and results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepOptions:
    train_manifest: str  # audio_path|video_path|transcript per line (avasr.data.manifest)
    val_manifest: str  # training speakers' other utterances: early stopping, ASHA and the champion's choice
    # Unseen speakers: every trial's test WER is shown beside its val WER (never used to choose); "" for none.
    test_manifest: str = ""
    space: str = "smoke"  # a file name in tune_spaces/ or a path to a space file
    name: str = "fusion-sweep"  # the sweep's folder under storage_path, and the parent run's name
    storage_path: str = "outputs/sweeps"  # every node must reach it on a cluster (NFS, S3, ...)
    mlflow_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite in the project folder
    # Where people open MLflow's UI, for the links the sweep prints: default the tracking server, or for a sqlite
    # store `mlflow ui`'s http://127.0.0.1:5000
    mlflow_ui_url: str | None = None
    experiment: str = DEFAULT_EXPERIMENT  # MLflow experiment: one parent run per sweep, one child run per trial
    address: str | None = None  # Ray cluster ("auto", "ray://host:10001"); None starts a local one
    cpus_per_trial: float = 1.0  # a trial's Tune function and its one Train worker together
    gpus_per_trial: float | None = None  # None: one per trial when the cluster has GPUs, else none
    max_failures: int = 2  # worker failures a trial recovers from (from its last checkpoint)
    # A trial whose Train worker gets no CPUs/GPUs within this fails, naming who holds them (Tune reruns it once),
    # and the sweep goes on; also how long the driver waits for its trials' resources to come back at the end.
    resource_wait_s: float = 120.0
    # How long the driver waits for a tracking server that went down before it finalises the trials.
    mlflow_wait_s: float = 300.0
    # asha stops the weaker half at each rung (on val loss); fifo trains every trial out. None: the space's
    # SCHEDULER (asha unless it says otherwise)
    scheduler: str | None = None
    num_samples: int | None = None  # overrides the space's NUM_SAMPLES
    # training seeds per configuration (seed, seed + 1, ...): the verdict measures seed-to-seed variation only with
    # 2 or more. None: the space's SEEDS
    seeds: int | None = None
    seed: int = 42  # the first training seed; also draws the random entries of the space's configurations
    # seeds in rounds: 2 for every configuration, then one more per round for those not significantly worse than
    # the best so far, up to --seeds (avasr.sweep.racing)
    race: bool = False
    max_trials: int | None = None  # racing: no round starts that would take the sweep past this many trials
    cache_dir: str = "data/cache"  # feature cache: warmed once by the driver, read by every trial
    max_params: int = DEFAULT_MAX_PARAMS  # budget: the champion has fewer parameters
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS  # budget: ONNX Runtime CPU p50, batch 1, 5 s input, one thread
    # what the champion is chosen on within the budgets: val WER (the verdict's rule, see --prefer), or the single
    # trial with the lowest val WER in babble at 0 dB (for noisy use)
    select_on: str = "val_wer"
    # deployment: the cheapest (CPU latency p50, then parameters) of the configurations not significantly worse
    # than the best; accuracy: the lowest mean val WER
    prefer: str = "deployment"
    ship: bool = True  # export the best run, check parity, register it as avasr@champion
    resume: bool = False  # continue an interrupted sweep of the same name


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
    links: SweepLinks  # MLflow UI pages that open this sweep's trials ready to compare
    ship_error: str | None = None  # why the champion was not registered (ONNX parity failed)
    verdict: Verdict | None = None  # None when no trial finished, or the sweep was interrupted


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep is about to run, computed once from its options and space before anything starts."""

    options: SweepOptions
    space: SearchSpace
    tracking_uri: str
    storage: Path  # Tune's storage_path (absolute)
    experiment_path: Path  # storage / name: Tune's experiment folder and the sweep's own files
    test_manifest: str  # absolute; "" for none
    other_tests: dict[str, str]  # the test manifest's corpus's other test splits (name -> absolute manifest)
    fixed: dict  # what every trial's config shares (absolute paths, the space's fixed entries)
    varying: tuple[dict, ...]  # each configuration's own values, keyed by its config_id
    base: Config  # `fixed` as a Config
    corpus: str
    configurations: int
    seeds: int

    @property
    def trials(self) -> int:
        return self.configurations * self.seeds

    def variants(self, seeds: dict[str, range]) -> list[dict]:
        """Tune's trials for `seeds` (config id -> the seed indices to run): one dict each, seed by seed."""
        ids = {config_id({**self.fixed, **values}): values for values in self.varying}
        variants = []
        for index in range(max((r.stop for r in seeds.values()), default=0)):
            for cid, wanted in seeds.items():
                if index in wanted:
                    seed = self.options.seed + index
                    variants.append(trial_variants(self.fixed, [ids[cid]], 1, seed)[0])
        return variants

    @property
    def config_ids(self) -> list[str]:
        return [config_id({**self.fixed, **values}) for values in self.varying]

    @property
    def train_storage(self) -> str:
        return str(self.experiment_path / "train_runs")

    @property
    def onnx_dir(self) -> Path:
        return self.experiment_path / ONNX_FOLDER

    def errors_dir(self, run_id: str) -> Path:
        return self.experiment_path / ERRORS_FOLDER / run_id


def plan_sweep(options: SweepOptions) -> SweepPlan:
    """Validate the options and the space, and lay out the sweep (nothing is written yet)."""
    if options.scheduler not in (None, *SCHEDULERS):
        raise SweepError(f"unknown scheduler {options.scheduler!r}: choose from {', '.join(SCHEDULERS)}")
    if options.select_on not in SELECTION_METRICS:
        raise SweepError(f"unknown --select-on {options.select_on!r}: choose from {', '.join(SELECTION_METRICS)}")
    if options.prefer not in PREFERENCES:
        raise SweepError(f"unknown --prefer {options.prefer!r}: choose from {', '.join(PREFERENCES)}")
    if options.resource_wait_s <= 0 or options.mlflow_wait_s < 0:
        raise SweepError(
            f"resource_wait_s must be positive and mlflow_wait_s at least 0, got "
            f"{options.resource_wait_s:g} and {options.mlflow_wait_s:g}"
        )
    space = load_space(options.space)
    seeds = options.seeds or space.seeds
    if seeds < 1:
        raise SweepError(f"--seeds must be at least 1, got {seeds}")
    if options.race and seeds < 2:
        raise SweepError(f"--race runs seeds in rounds from 2 up to --seeds: give --seeds 3 or more, not {seeds}")
    fixed = base_trial_config(options, space)
    varying = configurations(space.space, options.num_samples or space.num_samples, options.seed)
    base = Config.from_dict(fixed_values(fixed))  # without the sweep-only keys a space may set (fail_at_epoch)
    storage = Path(options.storage_path).resolve()
    return SweepPlan(
        options=options,
        space=space,
        tracking_uri=tracking.resolve_tracking_uri(options.mlflow_uri, PROJECT_DIR),
        storage=storage,
        experiment_path=storage / options.name,
        test_manifest=str(Path(options.test_manifest).resolve()) if options.test_manifest else "",
        other_tests={k: str(v) for k, v in other_test_splits(options.test_manifest).items()}
        if options.test_manifest
        else {},
        fixed=fixed,
        varying=tuple(varying),
        base=base,
        corpus=corpus_id(Path(base.train_manifest), Path(base.val_manifest)),
        configurations=len(varying),
        seeds=seeds,
    )


# --- resources ---------------------------------------------------------------------------------------------------
RESOURCE_STEP = 1e-4  # Ray counts fractional resources in steps of 0.0001: 1/3 of a GPU is 0.3333
IDLE_GPU_SHARE = 1e-3  # n trials of 1/n each may leave this much of a GPU unassigned (3 x 0.3333 = 0.9999)


@dataclass(frozen=True)
class TrialResources:
    cpus: float  # per trial, Tune function included
    gpus: float  # per trial (its Train worker's): 0, 1, or 1/n when n trials share each GPU
    concurrency: int
    gpu_slots: int = 0  # trials the cluster's GPUs hold at once (GPUs x trials_per_gpu)

    @property
    def use_gpu(self) -> bool:
        return self.gpus > 0

    @property
    def trials_per_gpu(self) -> int:
        """How many trials share one GPU: n for 1/n of one, 1 for a whole one, 0 without."""
        return math.floor(1 / self.gpus + 1e-9) if self.gpus > 0 else 0

    def describe(self) -> str:
        """The line the sweep prints: `4 trial(s) at a time, 1 CPU and 0.25 GPU each, 4 trials per GPU`."""
        line = f"{self.concurrency} trial(s) at a time, {self.cpus:g} CPU and {self.gpus:g} GPU each"
        if not self.use_gpu:
            return line
        per_gpu = self.trials_per_gpu
        line += f", {per_gpu} trial{'s' if per_gpu > 1 else ''} per GPU"
        if self.concurrency < self.gpu_slots:
            line += f" (the CPUs fill {self.concurrency} of the GPUs' {self.gpu_slots} places: lower --cpus-per-trial)"
        return line


def check_gpu_share(gpus_per_trial: float) -> None:
    """A trial trains on one device: a whole GPU, or 1/n of one so that n trials share it with none of it idle."""
    if not 0 <= gpus_per_trial <= 1:
        raise SweepError(
            f"--gpus-per-trial must be between 0 and 1, got {gpus_per_trial:g}: a trial trains on one device (1), "
            "or shares one with others (1/n: 0.5, 0.25, ...)"
        )
    if gpus_per_trial == 0:
        return
    fits = math.floor(1 / gpus_per_trial + 1e-9)
    idle = 1 - fits * gpus_per_trial
    if idle > IDLE_GPU_SHARE:
        options = " or ".join(f"{_share(n):g} ({n} per GPU)" for n in (fits, fits + 1))
        raise SweepError(
            f"--gpus-per-trial {gpus_per_trial:g} does not divide a GPU: {fits} trial(s) on one would leave "
            f"{idle:.2g} of it idle; give 1/n of a GPU, e.g. {options}"
        )


def _share(trials_per_gpu: int) -> float:
    """1/n of a GPU, rounded down to what Ray counts (RESOURCE_STEP), so that n of them fit."""
    return math.floor(1 / RESOURCE_STEP / trials_per_gpu + 1e-9) * RESOURCE_STEP


def plan_resources(cluster: dict[str, float], cpus_per_trial: float, gpus_per_trial: float | None) -> TrialResources:
    """Trials that fit side by side in `cluster` (ray.cluster_resources()); refuses what would wait forever and a
    share of a GPU that leaves part of it idle. `gpus_per_trial` 1/n packs n trials on each GPU; None: one GPU per
    trial when the cluster has GPUs, else none."""
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    gpus_per_trial = (1.0 if gpus >= 1 else 0.0) if gpus_per_trial is None else gpus_per_trial
    if cpus_per_trial <= DRIVER_CPU:
        raise SweepError(f"cpus_per_trial must be more than {DRIVER_CPU}, got {cpus_per_trial}")
    check_gpu_share(gpus_per_trial)
    if cpus_per_trial > cpus:
        raise SweepError(
            f"a trial needs {cpus_per_trial:g} CPUs but the Ray cluster has {cpus:g}: lower "
            "--cpus-per-trial or add nodes"
        )
    if gpus_per_trial > gpus:
        raise SweepError(
            f"a trial needs {gpus_per_trial:g} GPUs but the Ray cluster has {gpus:g}: pass "
            "--gpus-per-trial 0 to train on CPUs"
        )
    concurrency = math.floor(cpus / cpus_per_trial + 1e-9)
    slots = 0
    if gpus_per_trial > 0:
        slots = math.floor(gpus / gpus_per_trial + 1e-9)
        concurrency = min(concurrency, slots)
    return TrialResources(cpus_per_trial, gpus_per_trial, concurrency, slots)


# --- the driver --------------------------------------------------------------------------------------------------
def corpus_id(train_manifest: Path, val_manifest: Path) -> str:
    """The built-in corpus's own id (its corpus.json), else the folder name and a hash of both manifests."""
    description = train_manifest.parent / "corpus.json"
    try:
        if description.is_file():
            found = json.loads(description.read_text(encoding="utf-8")).get("id")
            if found:
                return str(found)
        digest = hashlib.sha256(train_manifest.read_bytes() + val_manifest.read_bytes()).hexdigest()[:12]
    except (OSError, ValueError) as e:  # a missing manifest, a corrupt corpus.json
        raise SweepError(f"cannot read the corpus: {e}") from None
    return f"{train_manifest.parent.name}-{digest}"


def warm_feature_cache(config: Config, test_manifests: Sequence[str] = ()) -> None:
    """Featurise every utterance once, as Ray tasks over the cluster (avasr.data.prepare), before trials start:
    they then find every entry through the manifests' indexes without reading media.

    Also reports bad manifests (naming file and line) before any trial is scheduled.
    """
    manifests = [m for m in (config.train_manifest, config.val_manifest, *test_manifests) if m]
    report = prepare(manifests, config, runner=run_on_ray)
    print(f"feature cache: {report.summary()}")
    report.check()


def base_trial_config(options: SweepOptions, space: SearchSpace) -> dict:
    """Fixed values every trial gets, under the space's own: absolute paths (Ray runs trials in other folders). The
    space's varying entries and the seed come with each trial's variant."""
    return {
        "train_manifest": str(Path(options.train_manifest).resolve()),
        "val_manifest": str(Path(options.val_manifest).resolve()),
        "cache_dir": str(Path(options.cache_dir).resolve()) if options.cache_dir else "",
        "data_workers": 1,  # the cache is warm: one process reads it
        **{k: v for k, v in space.space.items() if not varies(v)},
    }


def make_scheduler(options: SweepOptions, space: SearchSpace, epochs: int):
    if (options.scheduler or space.scheduler) == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=SCHEDULER_TIME_ATTR, max_t=epochs, **{"grace_period": 1, "reduction_factor": 2, **space.asha}
    )


def open_parent_run(client: MlflowClient, plan: SweepPlan) -> tuple[str, str]:
    """(experiment id, parent run id): new, or read back from the sweep's state file on resume."""
    options, experiment_path, tracking_uri = plan.options, plan.experiment_path, plan.tracking_uri
    state_file = experiment_path / STATE_FILE
    if options.resume:
        if not state_file.is_file():
            raise SweepError(f"{experiment_path}: nothing to resume (no {STATE_FILE}); run without --resume")
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError) as e:
            raise SweepError(f"{state_file}: not a readable sweep state ({e}); run without --resume") from None
        if not isinstance(state, dict) or not set(STATE_KEYS) <= state.keys():
            raise SweepError(f"{state_file}: a sweep state needs {', '.join(STATE_KEYS)}; run without --resume")
        if state["tracking_uri"] != tracking_uri:
            raise SweepError(f"{state_file}: the sweep was tracked in {state['tracking_uri']}, not {tracking_uri}")
        client.update_run(state["parent_run_id"], status="RUNNING")
        return state["experiment_id"], state["parent_run_id"]
    if experiment_path.exists():
        raise SweepError(f"{experiment_path} already holds a sweep: pass --resume to continue it, or another --name")
    try:  # before the parent run: a sweep that cannot write its folder leaves no run behind
        experiment_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"{experiment_path.parent}: cannot create the sweeps' folder (--storage-path): {e}") from None
    experiment_id = tracking.ensure_experiment(client, options.experiment, tracking_uri)
    params = {
        "space": plan.space.path.stem,
        "num_samples": options.num_samples or plan.space.num_samples,
        "configurations": plan.configurations,
        "seeds": plan.seeds,
        "scheduler": options.scheduler or plan.space.scheduler,
        "corpus_id": plan.corpus,
        "seed": options.seed,
        "max_params": options.max_params,
        "max_latency_ms": options.max_latency_ms,
        "prefer": options.prefer,
    }
    parent = tracking.start_parent_run(
        client,
        experiment_id,
        options.name,
        params,
        {
            "avasr.space_file": str(plan.space.path),
            STORAGE_TAG: str(experiment_path),
            TEST_MANIFEST_TAG: plan.test_manifest,
        },
    )
    experiment_path.mkdir()
    state = {"tracking_uri": tracking_uri, "experiment_id": experiment_id, "parent_run_id": parent}
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    return experiment_id, parent


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


def run_sweep(options: SweepOptions) -> SweepResult:
    """Run (or resume) a sweep, finalise every trial in MLflow, give the verdict, ship the champion. See the
    module docstring."""
    plan = plan_sweep(options)
    tracking.check_tracking_uri(plan.tracking_uri)  # seconds, before Ray or any trial starts
    client = MlflowClient(plan.tracking_uri)
    experiment_id, parent_run_id = open_parent_run(client, plan)
    save_sweep_view(client, experiment_id, parent_run_id, options.name)  # the UI's links work while trials run
    print(f"{plan.configurations} configuration(s) x {plan.seeds} seed(s) = {plan.trials} trial(s)")

    try:  # the parent run must not stay RUNNING forever, whatever fails after it was opened
        interrupted = run_trials(plan, experiment_id, parent_run_id)
        trials = tuple(TrialSummary.from_run(r) for r in tracking.child_runs(client, experiment_id, parent_run_id))
        verdict = None if interrupted else give_verdict(client, plan, trials)
        if verdict is not None:
            verdict.save(plan.experiment_path)  # beside the sweep too: benchmarks/stability.py compares sweeps
        champion = choose_champion(plan, trials, verdict)
        onnx_path = version = ship_error = None
        if champion is not None and options.ship and not interrupted:
            try:
                onnx_path, version = ship(champion, plan.tracking_uri, plan.experiment_path / CHAMPION_ONNX)
            except ParityError as e:  # never register a model that disagrees with its checkpoint
                ship_error = str(e)
        close_parent_run(client, parent_run_id, trials, champion, interrupted, ship_error, verdict)
    except BaseException as e:
        try:  # a tracking server that is down cannot be told: the parent then stays RUNNING, i.e. incomplete
            tracking.check_tracking_uri(plan.tracking_uri)
            client.set_terminated(parent_run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        except Exception:  # noqa: BLE001 - the error that got here is the one to report
            pass
        raise
    return SweepResult(
        experiment_path=plan.experiment_path,
        tracking_uri=plan.tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        trials=trials,
        champion=champion,
        onnx_path=onnx_path,
        model_version=version,
        interrupted=interrupted,
        links=sweep_links(ui_url(plan.tracking_uri, options.mlflow_ui_url), experiment_id, parent_run_id),
        ship_error=ship_error,
        verdict=verdict,
    )


def val_errors(client: MlflowClient, plan: SweepPlan, trials: Sequence[TrialSummary]) -> dict[str, dict]:
    """Each finished trial's per-utterance val errors: kept beside the sweep, else read back from MLflow."""
    errors = {}
    for t in trials:
        if t.status != "FINISHED":
            continue
        path = plan.errors_dir(t.run_id) / f"{VAL_ERRORS}.csv"
        if not path.is_file():  # finalised on another machine, or the folder was cleaned: MLflow has a copy
            path = Path(client.download_artifacts(t.run_id, f"{ERRORS_FOLDER}/{VAL_ERRORS}.csv", str(path.parent)))
        errors[t.run_id] = read_errors(path)
    return errors


def give_verdict(client: MlflowClient, plan: SweepPlan, trials: Sequence[TrialSummary]) -> Verdict | None:
    """The verdict from the trials' per-utterance val errors; None when no trial finished."""
    errors = val_errors(client, plan, trials)
    if not errors:
        return None
    try:
        return decide(
            trials,
            errors,
            prefer=plan.options.prefer,
            max_params=plan.options.max_params,
            max_latency_ms=plan.options.max_latency_ms,
        )
    except (VerdictError, SignificanceError) as e:  # the trials are still there: the single best one ships
        print(f"warning: no verdict: {e}; choosing the single trial with the lowest val WER")
        return None


def choose_champion(plan: SweepPlan, trials: Sequence[TrialSummary], verdict: Verdict | None) -> TrialSummary | None:
    """The verdict's shipped trial; with --select-on a noisy metric, the single trial best on it (no verdict
    covers noisy WER yet)."""
    options = plan.options
    if options.select_on != "val_wer" or verdict is None:
        return choose_best(trials, options.max_params, options.max_latency_ms, options.select_on)
    return verdict.shipped


def run_trials(plan: SweepPlan, experiment_id: str, parent_run_id: str) -> bool:
    """Ray up, cache warm, every trial run, then finalised in MLflow. Returns True when the sweep was interrupted."""
    options = plan.options
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=options.address)
    try:
        resources = plan_resources(ray.cluster_resources(), options.cpus_per_trial, options.gpus_per_trial)
        print(resources.describe())
        if plan.base.cache_dir:
            warm_feature_cache(plan.base, [plan.test_manifest, *plan.other_tests.values()])
        context = TrialContext(
            tracking_uri=plan.tracking_uri,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            corpus_id=plan.corpus,
            train_storage=plan.train_storage,
            cpus=resources.cpus,
            gpus=resources.gpus,
            max_failures=options.max_failures,
            resource_wait_s=options.resource_wait_s,
            mlflow_wait_s=options.mlflow_wait_s,
            watch_preemption=not on_one_machine(started_ray, options.address),
        )
        trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": DRIVER_CPU})
        if inspectable():
            release_and_say()  # a cluster shrunk by an earlier sweep's orphans is whole again before trials start
        client = MlflowClient(plan.tracking_uri)
        if not options.race:
            every_seed = {cid: range(plan.seeds) for cid in plan.config_ids}
            return not run_round(plan, client, experiment_id, parent_run_id, trainable, resources, every_seed, 0)
        return run_race(plan, client, experiment_id, parent_run_id, trainable, resources)
    finally:
        if started_ray:
            ray.shutdown()


def run_round(
    plan: SweepPlan,
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    trainable,
    resources: TrialResources,
    seeds: dict[str, range],
    index: int,
) -> bool:
    """Train `seeds` (config id -> seed indices) as one Tune experiment, then finalise its trials in MLflow.
    Returns False when the sweep was interrupted. The first round (index 0) is Tune's experiment folder itself; a
    race's later rounds are folders round-2, round-3, ... inside it."""
    tune_dir = plan.experiment_path if index == 0 else plan.experiment_path / f"round-{index + 1}"
    options = plan.options
    try:
        grid = run_tuner(trainable, plan, resources, plan.variants(seeds), tune_dir)
    finally:  # stopped, failed or interrupted: this sweep's trials hold nothing when it returns
        settle_job_resources(options.resource_wait_s)
    if sweep_interrupted(tune_dir):  # Tune stops gracefully on Ctrl-C and returns
        return False
    tracking.wait_for_store(plan.tracking_uri, options.mlflow_wait_s)
    finalise_trials(client, plan, experiment_id, parent_run_id, grid)
    return True


def run_race(
    plan: SweepPlan, client: MlflowClient, experiment_id: str, parent_run_id: str, trainable, resources
) -> bool:
    """Seeds in rounds (avasr.sweep.racing): after each, the configurations significantly worse than the best so
    far leave. Returns True when the sweep was interrupted. A resumed race replays its finished rounds from Tune's
    saved results (the decisions are deterministic) and goes on where it stopped."""
    policy = Policy(min_seeds=2, max_seeds=plan.seeds, max_trials=plan.options.max_trials)
    done: dict[str, int] = dict.fromkeys(plan.config_ids, 0)
    rounds = []

    def one_round(targets: dict[str, int]) -> dict[str, Scores]:
        seeds = {cid: range(done[cid], target) for cid, target in targets.items()}
        print(f"race, round {len(rounds) + 1}: {sum(len(r) for r in seeds.values())} trial(s)")
        if not run_round(plan, client, experiment_id, parent_run_id, trainable, resources, seeds, len(rounds)):
            raise RaceInterrupted
        rounds.append(seeds)
        done.update(targets)
        trials = [TrialSummary.from_run(r) for r in tracking.child_runs(client, experiment_id, parent_run_id)]
        errors = val_errors(client, plan, trials)
        groups = group([t for t in trials if t.run_id in errors])
        return {cid: trial_scores(groups[cid], errors, cid) for cid in targets if cid in groups}

    try:
        state = race(plan.config_ids, one_round, policy)
    except RaceInterrupted:
        return True
    print(f"race over ({state.stopped}) after {state.rounds} round(s), {state.trials_used} trial(s)")
    return False


class RaceInterrupted(SweepError):
    """A race's round was interrupted (Ctrl-C): the race stops there, and the sweep can be resumed."""


def on_one_machine(started_ray: bool, address: str | None) -> bool:
    """This sweep brought Ray up itself, was given no cluster (neither --address nor RAY_ADDRESS, which `ray job
    submit` sets) and Ray has one node: a local sweep, where no node can be drained from under a trial."""
    return started_ray and not (address or os.environ.get("RAY_ADDRESS")) and len(ray.nodes()) == 1


def finalise_trials(client: MlflowClient, plan: SweepPlan, experiment_id: str, parent_run_id: str, grid) -> None:
    """Every child run of the sweep finalised from its trial's Tune result (see avasr.sweep.champion.finalise_trial),
    one configuration after another, each with its configuration's CPU latency (configuration_latencies)."""
    results = {r.metrics["trial_id"]: r for r in grid}
    runs = sorted(tracking.child_runs(client, experiment_id, parent_run_id), key=config_order)
    latency_of = configuration_latencies(runs, results, plan)
    for run in tqdm(runs, desc="finalising trials", unit="trial"):
        trial_id = run.data.tags.get(tracking.TRIAL_TAG, "")
        config = run.data.params.get(CONFIG_ID_KEY, run.info.run_id)
        result = results.get(trial_id)
        error = "no result" if result is None else None if result.error is None else str(result.error)
        try:
            measured = finalise_trial(
                client,
                run.info.run_id,
                latest_checkpoint(result, plan.train_storage),
                error,
                plan.onnx_dir / f"{trial_id}.onnx",
                plan.test_manifest,
                latency=latency_of.get(config),
                errors_dir=plan.errors_dir(run.info.run_id),
                other_tests=plan.other_tests,
            )
            if measured is not None:
                latency_of.setdefault(config, measured)  # measured here: the interleaved export had failed
        except Exception as e:  # one broken trial (corrupt checkpoint, ORT error) must not strand the others
            tracking.set_tags(client, run.info.run_id, {tracking.ERROR_TAG: repr(e)[:TAG_MAX_CHARS]})
            client.set_terminated(run.info.run_id, "FAILED")


def configuration_latencies(runs: Sequence, results: dict, plan: SweepPlan) -> dict[str, dict[str, float]]:
    """Each configuration's CPU latency metrics, measured once (latency belongs to the architecture, not the seed):
    the ONNX of its first seed with a checkpoint is exported, then all configurations are timed in turns
    (avasr.ship.latency.onnx_cpu_latencies), so that a load which comes and goes during the measurement falls on
    every configuration alike. A configuration finalised before (a resumed sweep, a race's earlier round) keeps its
    latency. A configuration whose export fails is left out: its trials' finalisation exports again and records why.
    """
    known: dict[str, dict[str, float]] = {}
    exported: dict[str, Path] = {}
    for run in runs:
        config = run.data.params.get(CONFIG_ID_KEY, run.info.run_id)
        if config in known or config in exported:
            continue
        if run.data.tags.get(FINAL_TAG) == "true":
            if (measured := latency_metrics(run.data.metrics)) is not None:
                known[config] = measured
            continue
        result = results.get(run.data.tags.get(tracking.TRIAL_TAG, ""))
        folder = None if result is None or result.error is not None else latest_checkpoint(result, plan.train_storage)
        if folder is None:
            continue
        path = plan.onnx_dir / f"{result.metrics['trial_id']}.onnx"
        try:
            model, model_config = model_from_checkpoint(load_checkpoint(folder / BEST_CHECKPOINT), where=str(folder))
            exported[config] = export_onnx(model, model_config, path)
        except AvasrError:
            continue
    try:
        timings = onnx_cpu_latencies(exported)
    except Exception:  # e.g. an onnxruntime error: each configuration's first trial then times itself and says why
        return known
    return known | {config: as_latency_metrics(timing) for config, timing in timings.items()}


def config_order(run) -> tuple[str, int]:
    return run.data.params.get(CONFIG_ID_KEY, run.info.run_id), int(run.data.params.get("seed", 0))


def run_tuner(trainable, plan: SweepPlan, resources: TrialResources, variants: list[dict], tune_dir: Path):
    """Tune over `variants` in `tune_dir` (restored from there when the sweep resumes and Tune saved it)."""
    options = plan.options
    if options.resume and tune.Tuner.can_restore(str(tune_dir)):
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={**plan.fixed, VARIANT_KEY: tune.grid_search(variants)},
            tune_config=tune.TuneConfig(
                metric=SCHEDULER_METRIC,
                mode="min",
                scheduler=make_scheduler(options, plan.space, plan.base.epochs),
                num_samples=1,  # the variants' grid holds every configuration and seed (avasr.sweep.spaces)
                max_concurrent_trials=resources.concurrency,
                # a fresh Tune function process per trial: an ASHA-stopped trial's
                # function is still in TorchTrainer.fit(), so Tune cannot reset its
                # actor and failed the next trial instead ("reuse requires
                # reset_config()"); killing the actor also stops its Train run
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=tune_dir.name,
                storage_path=str(tune_dir.parent),
                failure_config=tune.FailureConfig(max_failures=TRIAL_DRIVER_RETRIES),
            ),
        )
    with releasing_orphans():
        return tuner.fit()


def close_parent_run(
    client: MlflowClient,
    run_id: str,
    trials,
    champion: TrialSummary | None,
    interrupted: bool,
    ship_error: str | None = None,
    verdict: Verdict | None = None,
) -> None:
    """The sweep's answer onto its parent run: the verdict (VERDICT_MD, VERDICT_JSON, its plot), the trials'
    leaderboard (text and table), the Pareto-front plot, the champion; then closed."""
    if verdict is not None:
        client.log_text(run_id, verdict.markdown(), VERDICT_MD)
        client.log_dict(run_id, verdict.to_dict(), VERDICT_JSON)
        with tempfile.TemporaryDirectory() as tmp:
            title = f"{client.get_run(run_id).info.run_name}: val WER per configuration"
            client.log_artifact(run_id, str(plot_verdict(verdict, Path(tmp) / VERDICT_PLOT, title)), "plots")
        tracking.set_tags(client, run_id, {"avasr.verdict": verdict.sentence()[:TAG_MAX_CHARS]})
    client.log_text(run_id, leaderboard(trials, champion) + "\n", LEADERBOARD_TEXT)
    client.log_table(run_id, leaderboard_table(trials, champion), LEADERBOARD_TABLE)
    front = pareto_front(trials)
    with tempfile.TemporaryDirectory() as tmp:  # the front of configuration means when there is a verdict
        title = f"{client.get_run(run_id).info.run_name}: val WER against CPU latency"
        plot = (
            plot_configuration_front(verdict, Path(tmp) / PARETO_PLOT, title)
            if verdict is not None
            else plot_front(trials, Path(tmp) / PARETO_PLOT, title, champion)
        )
        client.log_artifact(run_id, str(plot), "plots")
    tracking.log_metrics(
        client,
        run_id,
        {
            "trials": len(trials),
            "pareto_trials": len(front),
            "failed_trials": sum(t.status == "FAILED" for t in trials),
        },
    )
    tracking.set_tags(client, run_id, {"avasr.pareto_run_ids": ",".join(t.run_id for t in front)[:TAG_MAX_CHARS]})
    if champion is not None:
        tracking.log_metrics(
            client,
            run_id,
            {"best_val_wer": champion.val_wer, "best_val_cer": champion.val_cer, "best_test_wer": champion.test_wer},
        )
        tracking.set_tags(
            client, run_id, {"avasr.champion_run_id": champion.run_id, "avasr.champion_fusion": champion.fusion}
        )
    if ship_error:
        tracking.set_tags(client, run_id, {tracking.ERROR_TAG: ship_error[:TAG_MAX_CHARS]})
    client.set_terminated(run_id, "KILLED" if interrupted else "FAILED" if ship_error else "FINISHED")
