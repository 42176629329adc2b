"""MLflow bookkeeping of a sweep: the store, one parent run per sweep, one child run per trial, and their plots.

Store: an absolute `sqlite:///<project>/mlflow.db` by default (MLflow 3 refuses the plain file store), with
artifacts in `<project>/mlartifacts`; `--mlflow-uri` or MLFLOW_TRACKING_URI for a tracking server (the only
choice on a cluster, where every node must reach the store). `check_tracking_uri` fails within seconds, before
any trial starts, when the store cannot be reached or written.

SQLite allows one writer at a time and races when several processes create a new database, so the sweep's
driver creates the database, the experiment and the parent run before any trial starts, and every run has one
writer at any moment (see avasr.sweep.driver for who writes what, and when).

Every function takes an explicit tracking URI or client: nothing here touches MLflow's global state.
"""

from __future__ import annotations

import csv
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag

from avasr.errors import AvasrError
from avasr.plots import save_figure

DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_FOLDER = "mlartifacts"  # next to the sqlite file
HEALTH_TIMEOUT_S = 5.0  # a tracking server answers /health in milliseconds; an unreachable one must fail fast
STORE_POLL_S = 2.0  # while waiting for a tracking server to come back
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests child runs under their parent with it
RUN_NAME_TAG = "mlflow.runName"
TRIAL_TAG = "avasr.trial_id"  # finds a trial's child run again after a retry or a restored sweep
KIND_TAG = "avasr.kind"  # "sweep" (parent) or "trial" (child)
ERROR_TAG = "avasr.error"  # why a run failed or was not shipped
# The experiment's kind for MLflow's UI ("Machine learning", not GenAI). 3.17's UI picks its page from the link's
# workflowType instead (avasr.sweep.mlflow_ui); the tag still labels the experiment, and earlier 3.x UIs open by it.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
EPOCH_PREFIX = "epoch/"  # per-epoch curves; the unprefixed names hold the best epoch's (final) values
# The per-epoch curves: avasr.train.METRIC_FIELDS but the epoch (restated: importing train would load torch here)
EPOCH_METRICS = (
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
PARAM_MAX_CHARS = 6000  # MLflow's limit on a param value
URI_ENV_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


class TrackingError(AvasrError, RuntimeError):
    """The MLflow store cannot be reached or written."""


# --- the store ---------------------------------------------------------------------------------------------------
def default_tracking_uri(project_dir: str | Path) -> str:
    return "sqlite:///" + str(Path(project_dir).resolve() / DEFAULT_DB_NAME)


def resolve_tracking_uri(uri: str | None, project_dir: str | Path) -> str:
    """`uri`, else MLFLOW_TRACKING_URI, else the project's sqlite file; relative sqlite paths made absolute.

    Absolute because Ray runs trials in other working directories: a relative sqlite path would open a new,
    empty database in each of them.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(project_dir)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_tracking_uri(uri: str, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Raise TrackingError within about `timeout_s` when the store is unusable; return quietly otherwise.

    http(s): the server's `GET /health`. sqlite: the database's folder exists (it is created) and is writable.
    Other schemes (postgresql, databricks, ...) are left to MLflow.
    """
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout_s) as response:
                status = response.status
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({health}: {e}); start it with "
                "`mlflow server --backend-store-uri sqlite:///ABS/PATH/mlflow.db` or pass "
                "another --mlflow-uri"
            ) from None
        if status != 200:
            raise TrackingError(f"MLflow tracking server {uri} answered {health} with HTTP {status}")
    elif scheme == "sqlite":
        path = sqlite_path(uri)
        if path is None:
            raise TrackingError(f"{uri}: use an absolute sqlite URI, sqlite:////abs/path/{DEFAULT_DB_NAME}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"{uri}: cannot create the folder of the MLflow database: {e}") from None
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise TrackingError(f"{uri}: {path} is not writable")
    elif scheme in ("", "file"):
        raise TrackingError(
            f"{uri}: MLflow 3 refuses the plain file store; use sqlite:////abs/path/"
            f"{DEFAULT_DB_NAME} or a tracking server (http://host:5000)"
        )


def wait_for_store(uri: str, timeout_s: float) -> None:
    """Return once the store answers; raise TrackingError when it has not for `timeout_s` (a tracking server that
    went down during a sweep: trials keep training without it, and their epochs are logged when it is back)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check_tracking_uri(uri)
        except TrackingError as e:
            if time.monotonic() > deadline:
                raise TrackingError(f"{e}; waited {timeout_s:g} s for it (--mlflow-wait-s)") from None
            time.sleep(STORE_POLL_S)


def artifact_location(uri: str) -> str | None:
    """For a sqlite store, a folder next to the database (absolute); a server chooses its own."""
    path = sqlite_path(uri)
    return (path.parent / ARTIFACTS_FOLDER).resolve().as_uri() if path else None


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, creating it (and with it, for sqlite, the database) when missing, as a model-training
    experiment (an existing one without a kind gets it; a kind someone chose is kept)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(
            name, artifact_location=artifact_location(uri), tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
        )
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {name!r} is deleted in {uri}: restore it or pick another name")
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return experiment.experiment_id


@contextmanager
def global_uris(uri: str) -> Iterator[None]:
    """MLflow's global tracking and registry URIs set to `uri` inside the block, then exactly as they were before.

    Registering a model (log_model with registered_model_name) and resolving models:/ URIs go through the global
    URIs. set_*_uri also exports MLFLOW_*_URI to the environment, so restoring with get_*_uri() would pin the
    resolved default (./mlflow.db in the working directory) on this process and its subprocesses: later
    registrations landed in the project's store instead of the one they were meant for."""
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    saved = tracking_state._tracking_uri, registry_state._registry_uri, {k: os.environ.get(k) for k in URI_ENV_VARS}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
        for name, value in saved[2].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- runs --------------------------------------------------------------------------------------------------------
def flat_params(values: dict) -> dict[str, str]:
    """Scalars as they are, lists as "a,b,c", nested dicts skipped: MLflow's compare view needs flat scalars."""
    params = {}
    for key, value in values.items():
        if isinstance(value, dict):
            continue
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        params[key] = text[:PARAM_MAX_CHARS]
    return params


def start_parent_run(client: MlflowClient, experiment_id: str, name: str, params: dict, tags: dict) -> str:
    run = client.create_run(experiment_id, run_name=name, tags={KIND_TAG: "sweep", **tags})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat_params(params).items()])
    return run.info.run_id


def find_child_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str) -> Run | None:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    )
    return runs[0] if runs else None


def child_run(
    client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str, run_name: str, params: dict
) -> str:
    """The trial's child run, created on its first attempt and found again on later ones; params logged once."""
    existing = find_child_run(client, experiment_id, parent_run_id, trial_id)
    if existing is not None:
        return existing.info.run_id
    run = client.create_run(
        experiment_id, run_name=run_name, tags={PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, KIND_TAG: "trial"}
    )
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat_params(params).items()])
    return run.info.run_id


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10_000
    )


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0, prefix: str = "") -> None:
    """Finite numbers only (MLflow stores NaN, but compare views and budgets then misbehave)."""
    now = int(time.time() * 1000)
    entries = [
        Metric(prefix + k, float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if entries:
        client.log_batch(run_id, metrics=entries)


def logged_epochs(client: MlflowClient, run_id: str) -> set[int]:
    """The epochs whose curves a run holds (every epoch logs all of EPOCH_METRICS in one batch)."""
    return {m.step for m in client.get_metric_history(run_id, EPOCH_PREFIX + EPOCH_METRICS[0])}


def log_missing_epochs(client: MlflowClient, run_id: str, rows: list[dict[str, float]]) -> int:
    """Log the epochs of `rows` (metrics.csv) that the run's curves lack, e.g. those a worker could not log while
    the tracking server was down: every epoch ends up logged exactly once. Returns how many were missing."""
    logged = logged_epochs(client, run_id)
    missing = [row for row in rows if int(row["epoch"]) not in logged]
    for row in missing:
        log_epoch(client, run_id, row)
    return len(missing)


def log_epoch(client: MlflowClient, run_id: str, row: dict[str, float]) -> None:
    """One epoch's curves (a metrics.csv row, or the metrics a worker reports) with step = epoch."""
    log_metrics(
        client,
        run_id,
        {k: row[k] for k in EPOCH_METRICS if k in row},  # older metrics.csv: fewer
        step=int(row["epoch"]),
        prefix=EPOCH_PREFIX,
    )


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, object]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


# --- the training-curve plot -------------------------------------------------------------------------------------
def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """avasr.train's metrics.csv -> one dict of floats per epoch, in file order."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_training_curves(rows: Iterable[dict[str, float]], path: str | Path, title: str) -> Path:
    """Two panels over epochs: train/val loss, and val WER/CER. Written as PNG (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = list(rows)
    epochs = [r["epoch"] for r in rows]
    figure, (losses, rates) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key in ("train_loss", "val_loss"):
        losses.plot(epochs, [r[key] for r in rows], marker="o", label=key)
    for key in ("val_wer", "val_cer"):
        rates.plot(epochs, [r[key] for r in rows], marker="o", label=key)
    losses.set(xlabel="epoch", ylabel="loss")
    rates.set(xlabel="epoch", ylabel="error rate", ylim=(0, max(1.05, *(r["val_wer"] for r in rows))))
    for axes in (losses, rates):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    return save_figure(figure, path)
