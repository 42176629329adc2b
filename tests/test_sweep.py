"""The fusion sweep: spaces, resources, budgets and the MLflow store without Ray; then tiny real sweeps on a local
Ray (2 CPUs) with a real sqlite MLflow store: tracking, a retried trial, an interrupted and resumed sweep."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray
from mlflow import MlflowClient

from avasr.config import Config
from avasr.data.manifest import write_manifest
from avasr.model import build_model, count_parameters
from avasr.champion import ShipError, TrialSummary, choose_best, export_best, leaderboard
from avasr.spaces import SpaceError, available_spaces, load_space
from avasr.sweep import DEFAULT_EXPERIMENT, SweepError, SweepOptions, corpus_id, plan_resources, run_sweep
from avasr.tracking import (EPOCH_PREFIX, PARENT_TAG, TRIAL_TAG, URI_ENV_VARS, TrackingError, check_tracking_uri,
                            global_uris, resolve_tracking_uri)
from tests.logs import tail
from tests.media import write_clip

PROJECT = Path(__file__).resolve().parents[1]
TRANSCRIPTS = ["bin blue", "lay red", "set green", "place at", "bin now", "lay soon"]
CLIP_SECONDS = 1.2  # 30 video frames: enough for CTC on every transcript above
TINY_FIELDS = {"dropout": 0.1, "lr": 3e-3, "batch_size": 2, "lip_size": 16, "encoder_channels": [4, 8, 8],
               "feature_dim": 16, "temporal_layers": 1, "device": "cpu"}
FINAL_METRICS = ("val_wer", "val_cer", "param_count", "cpu_latency_ms_p50", "cpu_latency_ms_p95",
                 "val_wer_snr0_babble")
FLAT_PARAMS = ("fusion", "dropout", "lr", "epochs", "seed", "corpus_id")
# ~35 s and ~5 s on a quiet 2-core machine; 2 busy processes beside it made the first 4-5 times slower (CI
# machines are shared): generous limits, only ever reached by a broken sweep.
SECOND_TRIAL_WITHIN_S, STOP_WITHIN_S = 480, 180
CLUSTER_CPUS = 2


# --- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Four training and two validation clips of a real face (Haar needs one) with a tone as audio."""
    root = tmp_path_factory.mktemp("corpus")
    rows = [(*write_clip(root / "clips", f"u{i}", CLIP_SECONDS), text) for i, text in enumerate(TRANSCRIPTS)]
    write_manifest(root / "train_manifest.txt", rows[:4])
    write_manifest(root / "val_manifest.txt", rows[4:])
    return root


@pytest.fixture(scope="module")
def local_ray():
    # with the dashboard, as `run_sweep` and `ray start` bring it up: Ray Train's PlacementGroupCleaner frees an
    # interrupted run's placement group through the State API it serves (without it, an interrupted sweep's last
    # trial kept its CPUs after its driver exited, and the resumed sweep waited for them forever)
    ray.init(num_cpus=CLUSTER_CPUS)
    yield
    ray.shutdown()


def write_space(folder: Path, fusion: str = '["simple"]', **fields) -> Path:
    """A space file: a grid over the fusions given as Python source, every other field fixed."""
    path = folder / "space.py"
    values = {**TINY_FIELDS, **fields}
    path.write_text(f"from ray import tune\nSPACE = {{'fusion': tune.grid_search({fusion}), **{values!r}}}\n")
    return path


def options(tmp_path: Path, corpus: Path, space: Path, **changes) -> SweepOptions:
    values = dict(
        train_manifest=str(corpus / "train_manifest.txt"), val_manifest=str(corpus / "val_manifest.txt"),
        space=str(space), storage_path=str(tmp_path / "sweeps"), mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db",
        cache_dir=str(corpus / "cache"), max_failures=1, scheduler="fifo",
    )
    return SweepOptions(**{**values, **changes})


def child_runs(client: MlflowClient, result) -> list:
    return client.search_runs([result.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, EPOCH_PREFIX + key))


# --- spaces ------------------------------------------------------------------------------------------------------
def test_shipped_spaces_load_and_cover_every_fusion():
    assert {"smoke", "fusion"} <= set(available_spaces())
    for name in ("smoke", "fusion"):
        space = load_space(name)
        assert space.space["fusion"] == {"grid_search": ["simple", "weighted", "attention", "adaptive"]}
        assert isinstance(space.space["epochs"], int)


def test_smoke_space_model_is_small():
    fixed = {k: v for k, v in load_space("smoke").space.items() if k not in ("fusion", "dropout", "lr")}
    counts = [count_parameters(build_model(Config.from_dict({**fixed, "fusion": f}))) for f in
              ("simple", "weighted", "attention", "adaptive")]
    assert max(counts) < 300_000, counts


def test_unknown_space_name_lists_the_valid_ones():
    with pytest.raises(SpaceError, match=r"unknown space 'nope': choose from fusion, smoke"):
        load_space("nope")


def test_unknown_fusion_in_a_space_lists_the_valid_ones(tmp_path):
    space = write_space(tmp_path, fusion='["simple", "gated"]')
    with pytest.raises(SpaceError, match=r"space\.py: .*fusion='gated' is not one of simple, weighted, attention, "
                                         r"adaptive"):
        load_space(str(space))


def test_unknown_field_in_a_space_is_named(tmp_path):
    space = write_space(tmp_path, learning_rate=0.1)
    with pytest.raises(SpaceError, match=r"unknown configuration keys: learning_rate"):
        load_space(str(space))


def test_space_may_not_set_what_the_sweep_owns_or_sample_epochs(tmp_path):
    with pytest.raises(SpaceError, match=r"train_manifest are set by the sweep"):
        load_space(str(write_space(tmp_path, train_manifest="x.txt")))
    path = tmp_path / "epochs.py"
    path.write_text("from ray import tune\nSPACE = {'epochs': tune.choice([2, 4])}\n")
    with pytest.raises(SpaceError, match=r"epochs must be a fixed number"):
        load_space(str(path))


def test_bounds_of_sampled_ranges_are_validated(tmp_path):
    path = tmp_path / "dropout.py"
    path.write_text("from ray import tune\nSPACE = {'dropout': tune.uniform(0.1, 1.5)}\n")
    with pytest.raises(SpaceError, match=r"dropout must be in \[0, 1\), got 1.5"):
        load_space(str(path))


# --- resources ---------------------------------------------------------------------------------------------------
def test_two_cpus_run_two_single_cpu_trials_side_by_side():
    plan = plan_resources({"CPU": 2.0}, cpus_per_trial=1, gpus_per_trial=None)
    assert (plan.concurrency, plan.cpus, plan.gpus, plan.use_gpu) == (2, 1, 0.0, False)
    assert plan_resources({"CPU": 2.0}, cpus_per_trial=2, gpus_per_trial=None).concurrency == 1


def test_gpu_cluster_gives_each_trial_a_gpu_and_is_bounded_by_them():
    plan = plan_resources({"CPU": 16.0, "GPU": 4.0}, cpus_per_trial=2, gpus_per_trial=None)
    assert (plan.concurrency, plan.gpus, plan.use_gpu) == (4, 1.0, True)
    assert plan_resources({"CPU": 16.0, "GPU": 4.0}, 2, gpus_per_trial=0.5).concurrency == 8
    assert plan_resources({"CPU": 16.0, "GPU": 4.0}, 2, gpus_per_trial=0).use_gpu is False


def test_trials_that_could_never_start_are_refused():
    with pytest.raises(SweepError, match=r"a trial needs 3 CPUs but the Ray cluster has 2"):
        plan_resources({"CPU": 2.0}, cpus_per_trial=3, gpus_per_trial=None)
    with pytest.raises(SweepError, match=r"a trial needs 1 GPUs but the Ray cluster has 0"):
        plan_resources({"CPU": 2.0}, cpus_per_trial=1, gpus_per_trial=1)


# --- choosing the best run ---------------------------------------------------------------------------------------
def summary(name: str, wer: float, cer: float = 0.5, params: int = 1000, p50: float = 10.0) -> TrialSummary:
    return TrialSummary(run_id=name, trial_id=name, status="FINISHED", fusion=name, dropout=0.1, lr=1e-3,
                        val_wer=wer, val_cer=cer, param_count=params, latency_p50_ms=p50, latency_p95_ms=p50,
                        checkpoint="", onnx_path="")


def test_choose_best_is_the_lowest_wer_within_both_budgets():
    runs = [summary("big", 0.1, params=5_000_000), summary("slow", 0.2, p50=120.0), summary("ok", 0.3),
            summary("tie-worse-cer", 0.3, cer=0.6), summary("no-latency", 0.05, p50=math.nan),
            summary("no-wer", math.nan)]
    assert choose_best(runs, max_params=5_000_000, max_latency_ms=100.0).run_id == "ok"
    assert choose_best(runs, max_params=6_000_000, max_latency_ms=100.0).run_id == "big"
    assert choose_best(runs, max_params=5_000_000, max_latency_ms=200.0).run_id == "slow"
    assert choose_best(runs, max_params=100, max_latency_ms=100.0) is None


def test_leaderboard_sorts_by_wer_and_marks_the_champion():
    runs = [summary("weighted", 0.4), summary("simple", 0.2), summary("attention", math.nan)]
    lines = leaderboard(runs, champion=runs[1]).splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["*", "weighted", "attention"]
    assert lines[2].split()[1] == "simple"


# --- the MLflow store --------------------------------------------------------------------------------------------
def test_unreachable_tracking_server_fails_fast():
    started = time.monotonic()
    with pytest.raises(TrackingError, match=r"MLflow tracking server http://127.0.0.1:9 is unreachable"):
        check_tracking_uri("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(TrackingError, match=r"unreachable"):
        check_tracking_uri("http://10.255.255.1:5000")  # unroutable: a timeout, not a refusal
    assert time.monotonic() - started < 10


def test_unreachable_mlflow_stops_the_sweep_before_any_trial(tmp_path, corpus):
    started = time.monotonic()
    opts = options(tmp_path, corpus, write_space(tmp_path), mlflow_uri="http://127.0.0.1:9")
    with pytest.raises(TrackingError, match="unreachable"):
        run_sweep(opts)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "sweeps").exists()  # no sweep folder, no parent run, no trial


def test_file_store_is_refused_and_sqlite_paths_made_absolute(tmp_path, monkeypatch):
    with pytest.raises(TrackingError, match=r"refuses the plain file store"):
        check_tracking_uri("file:///tmp/mlruns")
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///store/m.db", PROJECT) == f"sqlite:///{tmp_path}/store/m.db"
    check_tracking_uri(f"sqlite:///{tmp_path}/store/m.db")
    assert (tmp_path / "store").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri(None, PROJECT) == "http://tracking:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None, PROJECT) == f"sqlite:///{PROJECT}/mlflow.db"


def test_global_uris_leave_mlflow_following_its_default_again(tmp_path, monkeypatch):
    for name in URI_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/store.db"
    with global_uris(store):
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (store, store)
    assert not any(name in os.environ for name in URI_ENV_VARS)  # subprocesses inherit nothing
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the default follows the working directory: nothing was pinned
    assert "elsewhere" in mlflow.get_tracking_uri() and "elsewhere" in mlflow.get_registry_uri()


# --- real sweeps -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_sweep_tracks_one_parent_and_a_child_per_trial_and_ships_the_best(tmp_path, corpus, local_ray):
    space = write_space(tmp_path, fusion='["simple", "attention"]', epochs=2)
    result = run_sweep(options(tmp_path, corpus, space))

    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = child_runs(client, result)
    assert len(runs) == 3 and len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    assert parents[0].info.status == "FINISHED"
    assert sorted(r.data.params["fusion"] for r in children) == ["attention", "simple"]
    expected_corpus = corpus_id(corpus / "train_manifest.txt", corpus / "val_manifest.txt")
    for run in children:
        params, metrics = run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        assert {k: params[k] for k in FLAT_PARAMS} == {"fusion": params["fusion"], "dropout": "0.1", "lr": "0.003",
                                                       "epochs": "2", "seed": "42", "corpus_id": expected_corpus}
        assert set(FINAL_METRICS) <= set(metrics)
        config = Config.from_dict({**TINY_FIELDS, "fusion": params["fusion"]})
        assert metrics["param_count"] == count_parameters(build_model(config))
        assert 0 < metrics["cpu_latency_ms_p50"] <= metrics["cpu_latency_ms_p95"]
        for key in ("val_wer", "val_cer", "val_loss", "train_loss"):
            assert steps(client, run.info.run_id, key) == [1, 2], key
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/training_curves.png"]

    assert result.champion is not None and result.champion.run_id in {r.info.run_id for r in children}
    assert result.onnx_path.is_file() and not result.interrupted
    champion = client.get_model_version_by_alias("avasr", "champion")
    assert (champion.run_id, str(champion.version)) == (result.champion.run_id, result.model_version)

    # afterwards, from MLflow alone: the same choice ships again as the next version; impossible budgets are refused
    script = PROJECT / "experiments" / "export_best.py"
    done = subprocess.run([sys.executable, str(script), "--experiment", DEFAULT_EXPERIMENT, "--mlflow-uri",
                           result.tracking_uri, "--out", str(tmp_path / "best.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    again = client.get_model_version_by_alias("avasr", "champion")
    assert (again.run_id, int(again.version)) == (result.champion.run_id, int(result.model_version) + 1)
    assert f"version {again.version}" in done.stdout and (tmp_path / "best.onnx").is_file()
    with pytest.raises(ShipError, match=r"none of its 2 finished trials is within the budgets \(params < 10,"):
        export_best(result.tracking_uri, DEFAULT_EXPERIMENT, max_params=10)
    with pytest.raises(ShipError, match=r"no sweep called 'nope'"):
        export_best(result.tracking_uri, DEFAULT_EXPERIMENT, sweep="nope")


@pytest.mark.slow
def test_trials_after_one_stopped_by_asha_still_run(tmp_path, corpus, local_ray):
    # one at a time, the first trial learning and the others not (lr 1e-7): ASHA stops a later one at epoch 1,
    # while its Tune function is still inside TorchTrainer.fit(), and the next trial must start all the same
    fields = {k: v for k, v in TINY_FIELDS.items() if k != "lr"}
    space = tmp_path / "asha.py"
    space.write_text("from ray import tune\n"
                     f"SPACE = {{'lr': tune.grid_search([3e-3, 1e-7, 1e-7]), 'epochs': 2, **{fields!r}}}\n"
                     "ASHA = {'grace_period': 1, 'reduction_factor': 2}\n")
    result = run_sweep(options(tmp_path, corpus, space, scheduler="asha", cpus_per_trial=2.0, ship=False))

    client = MlflowClient(result.tracking_uri)
    runs = child_runs(client, result)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs), [r.data.tags for r in runs]
    trained = sorted(int(r.data.metrics["epochs_trained"]) for r in runs)
    assert trained[0] == 1 and trained[-1] == 2, trained  # one stopped at the rung, the first ran to the end


@pytest.mark.slow
def test_a_trial_failing_once_is_retried_from_its_checkpoint(tmp_path, corpus, local_ray):
    space = write_space(tmp_path, epochs=3, fail_at_epoch=1)
    result = run_sweep(options(tmp_path, corpus, space, ship=False))

    client = MlflowClient(result.tracking_uri)
    (run,) = child_runs(client, result)
    assert run.info.status == "FINISHED" and result.trials[0].status == "FINISHED"
    # the epoch counter continues after the failure: each epoch logged once, none from a restart
    assert steps(client, run.info.run_id, "val_loss") == [1, 2, 3]
    log = Path(client.download_artifacts(run.info.run_id, "training/training.log", str(tmp_path))).read_text()
    assert "after epoch 1" in log and log.count("resumed from") == 1


def second_trial_started(train_runs: Path, tracking_uri: str) -> bool:
    """The second trial's child run exists: created by its Tune function seconds before its Train run starts.

    The store is read only once the first trial has checkpoints: by then the driver has created the database
    (two processes creating one sqlite store race on its schema)."""
    if not list(train_runs.glob("*_00000/checkpoint_*")):
        return False
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return bool(client.search_runs(experiments, filter_string=f"tags.`{TRIAL_TAG}` LIKE '%_00001'"))


def interrupt_during_second_trial(driver: subprocess.Popen, train_runs: Path, tracking_uri: str, log: Path) -> float:
    """Ctrl-C to the sweep once its first trial has finished and its second has started; waits for it to exit."""
    deadline = time.monotonic() + SECOND_TRIAL_WITHIN_S
    while not second_trial_started(train_runs, tracking_uri):
        assert driver.poll() is None, f"the sweep ended before its second trial: {tail(log)}"
        assert time.monotonic() < deadline, f"no second trial within {SECOND_TRIAL_WITHIN_S} s: {tail(log)}"
        time.sleep(0.2)
    interrupted_at = time.time()
    driver.send_signal(signal.SIGINT)  # one trial at a time: the first has finished, the second has not
    assert driver.wait(timeout=STOP_WITHIN_S) == 130, tail(log)  # "interrupted: continue with --resume"
    deadline = time.monotonic() + STOP_WITHIN_S
    while ray.available_resources().get("CPU", 0.0) < CLUSTER_CPUS:  # the stopped trial's CPUs come back
        assert time.monotonic() < deadline, f"CPUs still held after the sweep ended: {ray.available_resources()}"
        time.sleep(0.5)
    return interrupted_at


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path, corpus, local_ray):
    space = write_space(tmp_path, fusion='["simple", "weighted"]', epochs=2)
    opts = options(tmp_path, corpus, space, ship=False, cpus_per_trial=2.0)  # one trial at a time
    command = [sys.executable, str(PROJECT / "experiments" / "sweep_fusion.py"), "--space", opts.space,
               "--train-manifest", opts.train_manifest, "--val-manifest", opts.val_manifest,
               "--storage-path", opts.storage_path, "--mlflow-uri", opts.mlflow_uri, "--cache-dir", opts.cache_dir,
               "--scheduler", "fifo", "--cpus-per-trial", "2", "--no-ship",
               "--address", ray.get_runtime_context().gcs_address]
    log = tmp_path / "driver.log"  # a file, not a pipe: a driver never blocks on output nobody reads
    with log.open("wb") as out:
        driver = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        interrupted_at = interrupt_during_second_trial(driver, Path(opts.storage_path) / opts.name / "train_runs",
                                                       opts.mlflow_uri, log)
    finally:
        if driver.poll() is None:  # a failed assertion must not leave a sweep running into the next tests
            driver.kill()
            driver.wait()

    result = run_sweep(SweepOptions(**{**opts.__dict__, "resume": True}))
    client = MlflowClient(opts.mlflow_uri)
    runs = {r.data.tags[TRIAL_TAG][-5:]: r for r in child_runs(client, result)}
    assert sorted(runs) == ["00000", "00001"] and not result.interrupted
    assert all(r.info.status == "FINISHED" for r in runs.values())
    first = client.get_metric_history(runs["00000"].info.run_id, EPOCH_PREFIX + "val_loss")
    assert sorted(m.step for m in first) == [1, 2]
    assert all(m.timestamp / 1000 < interrupted_at for m in first)  # nothing of the finished trial ran again
    assert steps(client, runs["00001"].info.run_id, "val_loss")[-1] == 2
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
