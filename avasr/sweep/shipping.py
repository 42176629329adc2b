"""Shipping a sweep's model: ONNX parity with PyTorch, registration as avasr@champion, and a later re-export from
the runs in MLflow alone.

    ship           the champion's ONNX (exported when missing) -> parity -> registered; idempotent per run
    sweep_trials   a tracked sweep's finished trials (the newest sweep that has any, or one by name)
    export_best    the verdict's choice (other budgets or preference), or a Pareto-front member, shipped afterwards
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from avasr.checkpoint import BEST_CHECKPOINT, load_model
from avasr.errors import OutputError
from avasr.ship.export import check_parity, export_onnx
from avasr.ship.registry import CHAMPION_ALIAS, REGISTERED_MODEL_NAME, register_onnx
from avasr.sweep import tracking
from avasr.sweep.champion import (
    CHAMPION_ONNX,
    DEFAULT_MAX_LATENCY_MS,
    DEFAULT_MAX_PARAMS,
    ERRORS_FOLDER,
    STORAGE_TAG,
    VAL_ERRORS,
    ShipError,
    TrialSummary,
    choose_best,
    pareto_front,
)
from avasr.sweep.verdict import decide, read_errors


def ship(champion: TrialSummary, tracking_uri: str, destination: Path) -> tuple[Path, str]:
    """The champion's ONNX (exported now when its configuration's latency was measured on another seed) -> parity
    with PyTorch (raises ParityError) -> registered avasr@champion. Idempotent: a run already registered (a resumed
    sweep that had shipped) keeps its version, and the alias points at it again."""
    model, config = load_model(Path(champion.checkpoint) / BEST_CHECKPOINT)
    source = Path(champion.onnx_path) if champion.onnx_path else destination
    if not source.is_file():
        export_onnx(model, config, source)
    report = check_parity(model, source)
    if source != destination:
        try:
            shutil.copyfile(source, destination)
        except OSError as e:
            raise OutputError(f"{destination}: cannot write the ONNX file: {e}") from None
    with tracking.global_uris(tracking_uri):  # register_onnx works on MLflow's global tracking and registry URIs
        shipped = registered_version(champion.run_id)
        if shipped is not None:
            MlflowClient().set_registered_model_alias(shipped.name, CHAMPION_ALIAS, shipped.version)
            return destination, str(shipped.version)
        version = register_onnx(
            destination, run_id=champion.run_id, metrics={"onnx_parity_max_abs_diff": report.max_abs_diff}
        )
    return destination, str(version.version)


def registered_version(run_id: str):
    """The newest registered version of avasr logged from `run_id`, or None."""
    versions = MlflowClient().search_model_versions(f"name = '{REGISTERED_MODEL_NAME}' and run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version), default=None)


# --- afterwards: from the runs in MLflow -------------------------------------------------------------------------
@dataclass(frozen=True)
class Shipped:
    sweep_run_id: str  # the parent run whose trials were compared
    trials: tuple[TrialSummary, ...]
    champion: TrialSummary
    onnx_path: Path
    model_version: str


def sweeps(client: MlflowClient, experiment_id: str, name: str | None = None) -> list[Run]:
    """The experiment's sweeps (parent runs), newest first; only those called `name` when given."""
    query = f"tags.`{tracking.KIND_TAG}` = 'sweep'"
    if name:
        query += f" and tags.`{tracking.RUN_NAME_TAG}` = '{name}'"
    return client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"])


@dataclass(frozen=True)
class SweepTrials:
    parent: Run
    trials: list[TrialSummary]  # its finished trials
    passed_over: list[str]  # names of newer sweeps without a finished trial (e.g. one that failed at its start)


def sweep_trials(tracking_uri: str, experiment: str, sweep: str | None = None) -> SweepTrials:
    """The finished trials of a tracked sweep: the one called `sweep`, else the newest sweep with at least one
    finished trial (newer ones without any are passed over and named). Raises ShipError when there is none."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ShipError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    passed_over = []
    for parent in sweeps(client, found.experiment_id, sweep):
        runs = tracking.child_runs(client, found.experiment_id, parent.info.run_id)
        trials = [TrialSummary.from_run(r) for r in runs if r.info.status == "FINISHED"]
        if trials or sweep:
            return SweepTrials(parent, trials, passed_over)
        passed_over.append(parent.info.run_name)
    if sweep:
        raise ShipError(f"no sweep called {sweep!r} in experiment {experiment!r} of {tracking_uri}")
    without = f" ({len(passed_over)} sweep(s) without one: {', '.join(passed_over)})" if passed_over else ""
    raise ShipError(f"no sweep with a finished trial in experiment {experiment!r} of {tracking_uri}{without}")


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
    prefer: str = "deployment",
) -> Shipped:
    """Ship a finished trial of a tracked sweep: the verdict's choice within the budgets (which may differ from the
    sweep's: other budgets, another preference), the single best trial on a noisy `select_on`, or the Pareto-front
    member `run_id` (budgets ignored: the user chose the trade-off). Parity-checked ONNX, registered as
    avasr@champion. Raises ShipError when there is nothing to ship."""
    found = sweep_trials(tracking_uri, experiment, sweep)
    parent, trials = found.parent, found.trials
    if run_id:
        champion = front_member(trials, run_id)
    elif select_on != "val_wer":
        champion = choose_best(trials, max_params, max_latency_ms, select_on)
    else:
        errors = val_errors(MlflowClient(tracking_uri), trials)
        verdict = decide(trials, errors, prefer=prefer, max_params=max_params, max_latency_ms=max_latency_ms)
        champion = verdict.shipped
    if champion is None:
        raise ShipError(
            f"sweep {parent.info.run_name!r}: none of its {len(trials)} finished trials is within "
            f"the budgets (params < {max_params:,}, p50 <= {max_latency_ms:g} ms)"
        )
    checkpoint = Path(champion.checkpoint) / BEST_CHECKPOINT
    if not checkpoint.is_file():
        raise ShipError(
            f"run {champion.run_id} ({champion.fusion}): {checkpoint} is gone; was the sweep's storage moved or "
            "cleaned?"
        )
    destination = Path(destination or Path(parent.data.tags[STORAGE_TAG]) / CHAMPION_ONNX)
    onnx_path, version = ship(champion, tracking_uri, destination)
    return Shipped(parent.info.run_id, tuple(trials), champion, onnx_path, version)


def val_errors(client: MlflowClient, trials: list[TrialSummary]) -> dict[str, dict]:
    """Each trial's per-utterance val errors, read back from its run's artifacts (trials of a sweep that kept none
    are left out, and the verdict says so by leaving them out)."""
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for t in trials:
            try:
                path = client.download_artifacts(t.run_id, f"{ERRORS_FOLDER}/{VAL_ERRORS}.csv", tmp)
            except MlflowException:
                continue
            found[t.run_id] = read_errors(path)
    return found
