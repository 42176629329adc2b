"""After the trials: each trial's final metrics, the Pareto front, and the single best trial within the budgets.

    final_metrics      best checkpoint -> val WER/CER, params, ONNX export, CPU latency, noisy-babble WER, test WER
    finalise_trial     those into the trial's MLflow child run, which is then closed
    choose_best        lowest val WER among runs with params < max_params and latency p50 <= max_latency_ms
    pareto_front       the runs no other run beats on val WER, latency p50 and parameters at once

The verdict over configurations and seeds is avasr.sweep.verdict's; shipping is avasr.sweep.shipping's.

The champion is one point; the front is the whole trade-off. A run is on the front when no other run is at least
as good on val WER, CPU latency (p50) and parameter count at once and strictly better on one of them. Runs with
identical numbers do not dominate each other: both stay on it. Runs without a WER or a latency never are.

Latency is measured here, by the sweep's driver after all trials end, not in the trials: every trial is timed on
the same node with no training running beside it, and trials stopped by ASHA (whose Tune function is killed) get
their final metrics too.
"""

from __future__ import annotations

import csv
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from avasr.checkpoint import BEST_CHECKPOINT, load_checkpoint, model_from_checkpoint
from avasr.corpus.splits import SHORT_NAMES
from avasr.data.mixing import NoiseError
from avasr.data.noisy_speech import NoiseSpec
from avasr.errors import AvasrError, OutputError
from avasr.evaluation import decoding_for, evaluate_decoding
from avasr.metrics import ERROR_FIELDS
from avasr.ship.export import ExportError, export_onnx
from avasr.ship.latency import onnx_cpu_latency
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
LATENCY_METRICS = ("cpu_latency_ms_p50", "cpu_latency_ms_p95")
ERRORS_FOLDER = "errors"  # in each trial's artifacts: one CSV per evaluated set, one row per utterance
VAL_ERRORS, TEST_ERRORS = "val", "test"


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
    config_id: str = ""  # the configuration it trains (everything but the seed); trials of one share it
    seed: int = -1
    # WER on the corpus's other test splits (e.g. unseen voices, unseen faces), as (split, WER) pairs: shown, never
    # used to choose; empty without them
    split_wers: tuple[tuple[str, float], ...] = ()

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
            config_id=params.get("config_id") or run.info.run_id[:8],  # a run of an older sweep: its own
            seed=int(params.get("seed", -1)),
            split_wers=tuple((s, metrics[split_metric(s)]) for s in split_names(metrics)),
        )


def split_metric(split: str) -> str:
    """The metric of a test split's WER: test_wer for the sweep's test set, test_unseen_voice_wer for another."""
    return f"{split}_wer"


def split_names(metrics: dict[str, float]) -> list[str]:
    """The other test splits a trial was measured on, in the built-in corpus's order."""
    found = [k[: -len("_wer")] for k in metrics if k.startswith("test_") and k.endswith("_wer") and k != "test_wer"]
    known = list(SHORT_NAMES)
    return sorted(found, key=lambda s: (known.index(s) if s in known else len(known), s))


# --- a trial's final metrics -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finalised:
    """What finalising one trial measured: its metrics, what went wrong on the way (never fatal), and one row per
    utterance of each evaluated set (avasr.metrics.ERROR_FIELDS), keyed by ERROR_SETS."""

    metrics: dict[str, float]
    problems: list[str]
    errors: dict[str, list[dict]]


def final_metrics(
    folder: Path,
    rows: list[dict[str, float]],
    onnx_path: Path,
    test_manifest: str | None = None,
    latency: dict[str, float] | None = None,
    other_tests: dict[str, str] | None = None,
) -> Finalised:
    """The best checkpoint of a trial's checkpoint folder (whose metrics.csv holds `rows`): its val WER/CER, its
    errors per val utterance (decoded again, clean, as training's val WER), its ONNX written to onnx_path and its CPU
    latency measured, unless `latency` gives them (latency and size belong to the architecture, not the seed: the
    sweep exports and times each configuration once, all in turns, before finalising its trials), its WER in babble,
    and its WER/CER and errors on `test_manifest` and on each of `other_tests` (split name -> manifest: the corpus's
    other test splits).

    A failed export or noisy evaluation is a problem, not an error: the run stays comparable (without a latency it
    can never be chosen)."""
    checkpoint = load_checkpoint(folder / BEST_CHECKPOINT)  # loaded once: export and every evaluation use it
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
    if latency is None:
        try:
            export_onnx(model, config, onnx_path)
            measured = onnx_cpu_latency(onnx_path)
            metrics |= as_latency_metrics(measured)
        except ExportError as e:
            problems.append(str(e))
    else:
        metrics |= latency
    decoding = decoding_for(model, config)  # decoded as in training's val WER
    errors = {VAL_ERRORS: evaluate_decoding(decoding, config.val_manifest)["errors"]}
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
    tests = ({TEST_ERRORS: test_manifest} if test_manifest else {}) | (other_tests or {})
    for split, manifest in tests.items():  # test_wer, test_cer, then test_unseen_voice_wer, ...
        test = evaluate_decoding(decoding, manifest)
        metrics |= {split_metric(split): test["wer"], f"{split}_cer": test["cer"]}
        errors[split] = test["errors"]
    return Finalised(metrics, problems, errors)


def as_latency_metrics(timing: dict[str, float]) -> dict[str, float]:
    """A timing of avasr.ship.latency ({"p50_ms", "p95_ms", ...}) as a trial's latency metrics."""
    return {"cpu_latency_ms_p50": timing["p50_ms"], "cpu_latency_ms_p95": timing["p95_ms"]}


def latency_metrics(metrics: dict[str, float]) -> dict[str, float] | None:
    """The latency part of a trial's final metrics, for its configuration's other seeds; None when not measured."""
    found = {k: metrics[k] for k in LATENCY_METRICS if k in metrics}
    return found if len(found) == len(LATENCY_METRICS) else None


def write_errors(rows: list[dict], path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=ERROR_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the per-utterance errors: {e}") from None
    return path


def finalise_trial(
    client: MlflowClient,
    run_id: str,
    folder: Path | None,
    error: str | None,
    onnx_path: Path,
    test_manifest: str | None = None,
    latency: dict[str, float] | None = None,
    errors_dir: Path | None = None,
    other_tests: dict[str, str] | None = None,
) -> dict[str, float] | None:
    """Final metrics, curves, training files and per-utterance errors (ERRORS_FOLDER/val.csv, test.csv and one file
    per split of `other_tests`, also kept in `errors_dir` when given) into a child run, then close it. Idempotent
    (resumed sweeps). Returns the latency metrics it measured or was given (see `final_metrics`), None when the
    trial has none.

    `folder` is the trial's last checkpoint folder (None when no epoch finished); `error` why the trial failed."""
    run = client.get_run(run_id)
    if run.data.tags.get(FINAL_TAG) == "true":
        return latency_metrics(run.data.metrics)
    if error is not None or folder is None:
        reason = error or "no epoch finished"
        tracking.set_tags(client, run_id, {tracking.ERROR_TAG: reason[:TAG_MAX_CHARS], FINAL_TAG: "true"})
        client.set_terminated(run_id, "FAILED")
        return None
    rows = tracking.read_metrics_csv(folder / METRICS_FILE)
    tracking.log_missing_epochs(client, run_id, rows)  # e.g. those a worker could not log while the server was down
    final = final_metrics(folder, rows, onnx_path, test_manifest, latency, other_tests)
    with tempfile.TemporaryDirectory() as tmp:
        plot = tracking.plot_training_curves(rows, Path(tmp) / PLOT_FILE, run.info.run_name)
        client.log_artifact(run_id, str(plot), "plots")
        for name, errors in final.errors.items():
            path = write_errors(errors, (errors_dir or Path(tmp)) / f"{name}.csv")
            client.log_artifact(run_id, str(path), ERRORS_FOLDER)
    for name in (METRICS_FILE, LOG_FILE):
        client.log_artifact(run_id, str(folder / name), "training")
    tags = {CHECKPOINT_TAG: folder, FINAL_TAG: "true"}
    if "cpu_latency_ms_p50" in final.metrics and onnx_path.is_file():  # the seed whose export was timed
        tags[ONNX_TAG] = onnx_path
    if final.problems:
        tags[tracking.ERROR_TAG] = "; ".join(final.problems)[:TAG_MAX_CHARS]
    tracking.log_metrics(client, run_id, final.metrics, step=int(final.metrics["epochs_trained"]))
    tracking.set_tags(client, run_id, tags)
    client.set_terminated(run_id, "FINISHED")
    return latency_metrics(final.metrics)


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
