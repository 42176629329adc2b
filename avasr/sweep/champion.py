"""After the trials: each trial's final metrics, the choice of the best run within the budgets, and shipping it.

    final_metrics      best checkpoint -> val WER/CER, params, ONNX export, CPU latency, noisy-babble WER, test WER
    finalise_trial     those into the trial's MLflow child run, which is then closed
    choose_best        lowest val WER among runs with params < max_params and latency p50 <= max_latency_ms
    pareto_front       the runs no other run beats on val WER, latency p50 and parameters at once
    ship               ONNX parity with PyTorch -> registered as avasr@champion
    export_best        choose (or take a front member) and ship afterwards, from a sweep's runs in MLflow

The champion is one point; the front is the whole trade-off. A run is on the front when no other run is at least
as good on val WER, CPU latency (p50) and parameter count at once and strictly better on one of them. Runs with
identical numbers do not dominate each other: both stay on it. Runs without a WER or a latency never are.

Latency is measured here, by the sweep's driver after all trials end, not in the trials: every trial is timed on
the same node with no training running beside it, and trials stopped by ASHA (whose Tune function is killed) get
their final metrics too.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from avasr.checkpoint import BEST_CHECKPOINT, load_checkpoint, load_model, model_from_checkpoint
from avasr.data.mixing import NoiseError
from avasr.data.noisy_speech import NoiseSpec
from avasr.errors import AvasrError, OutputError
from avasr.evaluation import decoding_for, evaluate_decoding
from avasr.ship.export import ExportError, check_parity, export_onnx
from avasr.ship.latency import onnx_cpu_latency
from avasr.ship.registry import register_onnx
from avasr.sweep import tracking
from avasr.train import LOG_FILE, METRICS_FILE

DEFAULT_MAX_PARAMS = 5_000_000  # the model's size budget
DEFAULT_MAX_LATENCY_MS = 100.0  # p50, batch 1, 5 s input, one thread: the default model takes ~35 ms on this CPU
PLOT_FILE = "training_curves.png"
TAG_MAX_CHARS = 5000  # MLflow's limit on a tag value
CHECKPOINT_TAG, ONNX_TAG, FINAL_TAG = "avasr.checkpoint", "avasr.onnx", "avasr.finalised"
STORAGE_TAG = "avasr.storage"  # a sweep's (parent run's) folder: its Tune state, checkpoints and ONNX files
TEST_MANIFEST_TAG = "avasr.test_manifest"  # a sweep's unseen-speaker test set (parent run), for later reports
CHAMPION_ONNX = "champion.onnx"  # in that folder
NOISY_VAL_METRIC = "val_wer_snr0_babble"  # the best checkpoint's val WER in babble at 0 dB, one fixed draw
NOISY_VAL_NOISE = NoiseSpec("babble", snr_db=0.0, seed=0)
SELECTION_METRICS = ("val_wer", NOISY_VAL_METRIC)  # what the champion may be chosen on


class ShipError(AvasrError, RuntimeError):
    """Nothing to ship: no sweep, no run within the budgets, or a trial whose files are gone."""


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
    test_wer: float = math.nan  # on the unseen test speakers (shown, never used to choose); nan without a test set
    val_wer_snr0_babble: float = math.nan  # NOISY_VAL_METRIC: val WER in babble at 0 dB; nan when not measured

    @classmethod
    def from_run(cls, run) -> TrialSummary:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        return cls(
            run_id=run.info.run_id,
            trial_id=tags.get(tracking.TRIAL_TAG, ""),
            status=run.info.status,
            fusion=params.get("fusion", "?"),
            dropout=float(params.get("dropout", "nan")),
            lr=float(params.get("lr", "nan")),
            val_wer=metrics.get("val_wer", math.nan),
            val_cer=metrics.get("val_cer", math.nan),
            param_count=int(metrics.get("param_count", 0)),
            latency_p50_ms=metrics.get("cpu_latency_ms_p50", math.nan),
            latency_p95_ms=metrics.get("cpu_latency_ms_p95", math.nan),
            checkpoint=tags.get(CHECKPOINT_TAG, ""),
            onnx_path=tags.get(ONNX_TAG, ""),
            test_wer=metrics.get("test_wer", math.nan),
            val_wer_snr0_babble=metrics.get(NOISY_VAL_METRIC, math.nan),
        )


# --- a trial's final metrics -------------------------------------------------------------------------------------
def final_metrics(
    folder: Path, rows: list[dict[str, float]], onnx_path: Path, test_manifest: str | None = None
) -> tuple[dict[str, float], list[str]]:
    """(metrics, problems) of the best checkpoint in a trial's checkpoint folder, whose metrics.csv holds `rows`;
    its ONNX written to onnx_path; its WER/CER on `test_manifest` (unseen speakers) when given.

    A failed export or noisy evaluation is a problem, not an error: the run stays comparable (without a latency it
    can never be chosen)."""
    checkpoint = load_checkpoint(folder / BEST_CHECKPOINT)  # loaded once: export and both evaluations use it
    model, config = model_from_checkpoint(checkpoint, where=str(folder / BEST_CHECKPOINT))
    best = checkpoint["best_metrics"]
    metrics = {
        "val_wer": best["val_wer"],
        "val_cer": best["val_cer"],
        "val_loss": best["val_loss"],
        "param_count": best["param_count"],
        "best_epoch": best["epoch"],
        "epochs_trained": rows[-1]["epoch"],
    }
    problems = []
    try:
        export_onnx(model, config, onnx_path)
        latency = onnx_cpu_latency(onnx_path)
        metrics |= {"cpu_latency_ms_p50": latency["p50_ms"], "cpu_latency_ms_p95": latency["p95_ms"]}
    except ExportError as e:
        problems.append(str(e))
    decoding = decoding_for(model, config)  # decoded as in training's val WER
    try:  # same val utterances, noise and draw for every trial: the metric compares trials' robustness
        noisy = evaluate_decoding(
            decoding,
            config.val_manifest,
            snr_db=NOISY_VAL_NOISE.snr_db,
            noise=NOISY_VAL_NOISE.kind,
            noise_seed=NOISY_VAL_NOISE.seed,
        )
        metrics[NOISY_VAL_METRIC] = noisy["wer"]
    except NoiseError as e:  # e.g. a one-utterance val set has nobody to babble
        problems.append(str(e))
    if test_manifest:
        test = evaluate_decoding(decoding, test_manifest)
        metrics |= {"test_wer": test["wer"], "test_cer": test["cer"]}
    return metrics, problems


def finalise_trial(
    client: MlflowClient,
    run_id: str,
    folder: Path | None,
    error: str | None,
    onnx_path: Path,
    test_manifest: str | None = None,
) -> None:
    """Final metrics, curves and training files into a child run, then close it. Idempotent (resumed sweeps).

    `folder` is the trial's last checkpoint folder (None when no epoch finished); `error` why the trial failed."""
    run = client.get_run(run_id)
    if run.data.tags.get(FINAL_TAG) == "true":
        return
    if error is not None or folder is None:
        reason = error or "no epoch finished"
        tracking.set_tags(client, run_id, {tracking.ERROR_TAG: reason[:TAG_MAX_CHARS], FINAL_TAG: "true"})
        client.set_terminated(run_id, "FAILED")
        return
    rows = tracking.read_metrics_csv(folder / METRICS_FILE)
    tracking.log_missing_epochs(client, run_id, rows)  # e.g. those a worker could not log while the server was down
    metrics, problems = final_metrics(folder, rows, onnx_path, test_manifest)
    with tempfile.TemporaryDirectory() as tmp:
        plot = tracking.plot_training_curves(rows, Path(tmp) / PLOT_FILE, run.info.run_name)
        client.log_artifact(run_id, str(plot), "plots")
    for name in (METRICS_FILE, LOG_FILE):
        client.log_artifact(run_id, str(folder / name), "training")
    tags = {CHECKPOINT_TAG: folder, FINAL_TAG: "true"}
    if "cpu_latency_ms_p50" in metrics:
        tags[ONNX_TAG] = onnx_path
    if problems:
        tags[tracking.ERROR_TAG] = "; ".join(problems)[:TAG_MAX_CHARS]
    tracking.log_metrics(client, run_id, metrics, step=int(metrics["epochs_trained"]))
    tracking.set_tags(client, run_id, tags)
    client.set_terminated(run_id, "FINISHED")


# --- choosing and shipping ---------------------------------------------------------------------------------------
def objectives(trial: TrialSummary) -> tuple[float, float, int]:
    """What the front minimises, in order: val WER, p50 latency (ms), parameters."""
    return trial.val_wer, trial.latency_p50_ms, trial.param_count


def comparable(trial: TrialSummary) -> bool:
    return math.isfinite(trial.val_wer) and math.isfinite(trial.latency_p50_ms)


def dominates(a: TrialSummary, b: TrialSummary) -> bool:
    """a is no worse than b on every objective and better on one."""
    pairs = list(zip(objectives(a), objectives(b)))
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def pareto_front(trials: Sequence[TrialSummary]) -> list[TrialSummary]:
    """The trials no other trial dominates, best val WER first. Quadratic: a sweep has tens of trials."""
    candidates = [t for t in trials if comparable(t)]
    front = [t for t in candidates if not any(dominates(other, t) for other in candidates)]
    return sorted(front, key=objectives)


def choose_best(
    runs,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
    select_on: str = "val_wer",
) -> TrialSummary | None:
    """Lowest `select_on` (one of SELECTION_METRICS) among runs within both budgets (params < max_params,
    p50 <= max_latency_ms).

    Ties go to the lower val WER, then CER, then the faster model. Runs without that metric, a WER or a latency
    are never chosen.
    """
    if select_on not in SELECTION_METRICS:
        raise ShipError(f"cannot choose on {select_on!r}: choose from {', '.join(SELECTION_METRICS)}")
    eligible = [
        r
        for r in runs
        if comparable(r)
        and math.isfinite(getattr(r, select_on))
        and r.param_count < max_params
        and r.latency_p50_ms <= max_latency_ms
    ]
    return min(eligible, key=lambda r: (getattr(r, select_on), r.val_wer, r.val_cer, r.latency_p50_ms), default=None)


def ship(champion: TrialSummary, tracking_uri: str, destination: Path) -> tuple[Path, str]:
    """The champion's ONNX -> parity with PyTorch (raises ParityError) -> registered avasr@champion."""
    model, _ = load_model(Path(champion.checkpoint) / BEST_CHECKPOINT)
    report = check_parity(model, champion.onnx_path)
    try:
        shutil.copyfile(champion.onnx_path, destination)
    except OSError as e:
        raise OutputError(f"{destination}: cannot write the ONNX file: {e}") from None
    with tracking.global_uris(tracking_uri):  # register_onnx works on MLflow's global tracking and registry URIs
        version = register_onnx(
            destination, run_id=champion.run_id, metrics={"onnx_parity_max_abs_diff": report.max_abs_diff}
        )
    return destination, str(version.version)


# --- afterwards: from the runs in MLflow -------------------------------------------------------------------------
@dataclass(frozen=True)
class Shipped:
    sweep_run_id: str  # the parent run whose trials were compared
    trials: tuple[TrialSummary, ...]
    champion: TrialSummary
    onnx_path: Path
    model_version: str


def latest_sweep(client: MlflowClient, experiment_id: str, name: str | None = None):
    """The newest sweep (parent run) of the experiment, or the newest one called `name`."""
    query = f"tags.`{tracking.KIND_TAG}` = 'sweep'"
    if name:
        query += f" and tags.`{tracking.RUN_NAME_TAG}` = '{name}'"
    runs = client.search_runs(
        [experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def sweep_trials(tracking_uri: str, experiment: str, sweep: str | None = None) -> tuple[Run, list[TrialSummary]]:
    """(parent run, finished trials) of a tracked sweep: the newest, or the one called `sweep`.
    Raises ShipError when there is no such sweep."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ShipError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    parent = latest_sweep(client, found.experiment_id, sweep)
    if parent is None:
        which = f"called {sweep!r} " if sweep else ""
        raise ShipError(f"no sweep {which}in experiment {experiment!r} of {tracking_uri}")
    runs = tracking.child_runs(client, found.experiment_id, parent.info.run_id)
    trials = [TrialSummary.from_run(r) for r in runs if r.info.status == "FINISHED"]
    return parent, trials


def front_member(trials: Sequence[TrialSummary], run_id: str) -> TrialSummary:
    """The Pareto-front trial whose run id is or starts with `run_id`; ShipError naming the front otherwise."""
    front = pareto_front(trials)
    matches = [t for t in front if t.run_id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    members = ", ".join(f"{t.run_id[:8]} ({t.fusion})" for t in front) or "none"
    if not matches and any(t.run_id.startswith(run_id) for t in trials):
        raise ShipError(
            f"run {run_id} is not on the Pareto front: another trial is at least as good on val WER, "
            f"latency and parameters; the front is {members}"
        )
    raise ShipError(
        f"{'no' if not matches else 'more than one'} Pareto-front trial has a run id starting with "
        f"{run_id!r}; the front is {members}"
    )


def export_best(
    tracking_uri: str,
    experiment: str,
    sweep: str | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
    destination: Path | None = None,
    run_id: str | None = None,
    select_on: str = "val_wer",
) -> Shipped:
    """Ship a finished trial of a tracked sweep: the best within the budgets (which may differ from the sweep's), or
    the Pareto-front member `run_id` (budgets ignored: the user chose the trade-off). Parity-checked ONNX,
    registered as avasr@champion. Raises ShipError when there is nothing to ship."""
    parent, trials = sweep_trials(tracking_uri, experiment, sweep)
    if run_id:
        champion = front_member(trials, run_id)
    else:
        champion = choose_best(trials, max_params, max_latency_ms, select_on)
        if champion is None:
            raise ShipError(
                f"sweep {parent.info.run_name!r}: none of its {len(trials)} finished trials is within "
                f"the budgets (params < {max_params:,}, p50 <= {max_latency_ms:g} ms)"
            )
    for path in (Path(champion.checkpoint) / BEST_CHECKPOINT, Path(champion.onnx_path)):
        if not path.is_file():
            raise ShipError(
                f"run {champion.run_id} ({champion.fusion}): {path} is gone; was the sweep's storage moved or cleaned?"
            )
    destination = Path(destination or Path(parent.data.tags[STORAGE_TAG]) / CHAMPION_ONNX)
    onnx_path, version = ship(champion, tracking_uri, destination)
    return Shipped(parent.info.run_id, tuple(trials), champion, onnx_path, version)
