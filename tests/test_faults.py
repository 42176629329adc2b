"""The fault matrix of a sweep, on a real local Ray (2 CPUs) with a real MLflow store: a worker SIGKILLed in the
middle of training, an exception in a worker, several ASHA stops followed by more trials, the driver interrupted or
killed and then resumed, a tracking server killed and brought back. Every test ends with every CPU of the cluster
free again, given back by Ray and the sweep alone (tests.sweeps.assert_all_cpus_come_back removes nothing)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient
from ray.util.state import list_actors

from avasr.sweep.driver import SweepOptions, run_sweep
from avasr.sweep.tracking import EPOCH_METRICS, EPOCH_PREFIX, TRIAL_TAG, TrackingError, wait_for_store
from avasr.sweep.trial import WORK_DIR_PREFIX, EpochLog, make_work_dir
from avasr.train import METRIC_FIELDS
from tests.logs import tail
from tests.servers import MlflowServer, free_ports
from tests.sweeps import TINY_FIELDS, assert_all_cpus_come_back, child_runs, options, steps, write_space

PROJECT = Path(__file__).resolve().parents[1]
# ~35 s and ~5 s on a quiet 2-core machine; 2 busy processes beside it made the first 4-5 times slower (CI
# machines are shared): generous limits, only ever reached by a broken sweep.
SECOND_TRIAL_WITHIN_S, STOP_WITHIN_S = 480, 180
FAULT_WITHIN_S = 300  # the moment a fault is injected at (a first checkpoint, a first logged epoch) comes in ~20 s
SERVER_DOWN_S = 8.0  # how long the tracking server stays dead: several epochs of the tiny model


class Injector(threading.Thread):
    """Waits (bounded) for a condition while the sweep runs in the test's main thread, then injects a fault once.
    `error` holds what went wrong, for the test to raise: an assertion in a thread would be lost."""

    def __init__(self, ready, fault, what: str):
        super().__init__(daemon=True)
        self.ready, self.fault, self.what = ready, fault, what
        self.done, self.error = False, None

    def run(self) -> None:
        deadline = time.monotonic() + FAULT_WITHIN_S
        try:
            while not self.ready():
                if time.monotonic() > deadline:
                    self.error = f"never saw {self.what} within {FAULT_WITHIN_S} s"
                    return
                time.sleep(0.1)
            self.fault()
            self.done = True
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = f"{self.what}: {e!r}"


def registered_epoch(storage: Path) -> int:
    """The epoch of the latest checkpoint Ray Train's controller has registered for the trial (0: none yet): a
    retry resumes from it. A checkpoint folder alone is not enough: a worker killed right after reporting one left
    a retry that started over."""
    for snapshot in storage.glob("*/train_runs/*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        except (OSError, ValueError):  # being rewritten: read it again at the next poll
            return 0
        return int(latest["metrics"]["epoch"]) if latest else 0
    return 0


def epoch_lines(log: str) -> list[tuple[int, float]]:
    """(epoch, when it ended) for each epoch line of a training.log, in the file's order (time: the line's asctime,
    this machine's clock)."""
    lines = re.findall(r"^(\S+ \S+) INFO epoch (\d+): train_loss", log, re.M)
    return [(int(n), datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f").timestamp()) for at, n in lines]


def kill_train_worker() -> int:
    """SIGKILL to the one Train worker of this test's Ray: named by its address, since with another Ray on the
    machine the State API would otherwise pick the newest one, another's."""
    alive = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    (worker,) = list_actors(address=ray.get_runtime_context().gcs_address, filters=alive)
    subprocess.run(["kill", "-KILL", str(worker.pid)], check=True)
    return worker.pid


def test_a_worker_s_folder_outlives_it_only_until_the_next_worker_starts(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    killed = tmp_path / f"{WORK_DIR_PREFIX}{dead.pid}@{host}-abc"  # as a SIGKILLed worker leaves it
    (killed / "checkpoint").mkdir(parents=True)
    alive = tmp_path / f"{WORK_DIR_PREFIX}{os.getpid()}@{host}-def"  # a worker still training beside it
    elsewhere = tmp_path / f"{WORK_DIR_PREFIX}{dead.pid}@{host}x-ghi"  # another host's pid: means nothing here
    unnamed = tmp_path / f"{WORK_DIR_PREFIX}xyz"  # nothing says whose it is
    for folder in (alive, elsewhere, unnamed):
        folder.mkdir()

    mine = make_work_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in (alive, elsewhere, unnamed, mine))
    assert mine.name.startswith(f"{WORK_DIR_PREFIX}{os.getpid()}@{host}-")


# --- workers -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_worker_killed_mid_epoch_resumes_from_its_last_checkpoint(tmp_path, corpus, local_ray):
    epochs = 40  # a tiny epoch takes ~0.1-0.2 s: the worker must still be training when the kill lands
    first_kept = 3  # killed once a checkpoint of epoch 3 or later is registered: a resume from epoch 1 or 0 shows
    space = write_space(tmp_path, epochs=epochs, patience=epochs)  # no early stop: every epoch runs
    opts = options(tmp_path, corpus, space, ship=False, cpus_per_trial=2.0)
    storage = Path(opts.storage_path)
    killed, registered = [], []

    def kill() -> None:
        registered.append(registered_epoch(storage))
        killed.append(kill_train_worker())
        time.sleep(1.0)  # a report the controller took just before the kill is registered by now; the retry's
        registered.append(registered_epoch(storage))  # worker needs seconds to start, so none of its own yet

    killer = Injector(lambda: registered_epoch(storage) >= first_kept, kill, f"a checkpoint of epoch {first_kept}")
    killer.start()
    result = run_sweep(opts)
    killer.join(timeout=1)
    assert killer.done, killer.error
    # the retry's worker removed the killed one's training folder (its `finally` never ran)
    assert not list(Path(tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}{killed[0]}@*"))

    client = MlflowClient(result.tracking_uri)
    (run,) = child_runs(client, result)
    assert run.info.status == "FINISHED" and result.trials[0].status == "FINISHED"
    assert steps(client, run.info.run_id, "val_loss") == list(range(1, epochs + 1))  # each epoch once
    log = Path(client.download_artifacts(run.info.run_id, "training/training.log", str(tmp_path))).read_text()
    (resumed_after,) = map(int, re.findall(r"resumed from .* after epoch (\d+)", log))
    assert first_kept <= registered[0] <= resumed_after <= registered[1], (registered, resumed_after)
    # the log came back with that checkpoint and goes on after it: every epoch ended once, in order
    assert [epoch for epoch, _ in epoch_lines(log)] == list(range(1, epochs + 1)), log
    assert_all_cpus_come_back()


@pytest.mark.slow
def test_an_exception_in_a_worker_is_retried_from_its_checkpoint(tmp_path, corpus, local_ray):
    space = write_space(tmp_path, epochs=3, fail_at_epoch=1)
    result = run_sweep(options(tmp_path, corpus, space, ship=False))

    client = MlflowClient(result.tracking_uri)
    (run,) = child_runs(client, result)
    assert run.info.status == "FINISHED" and result.trials[0].status == "FINISHED"
    # the epoch counter continues after the failure: each epoch logged once, none from a restart
    assert steps(client, run.info.run_id, "val_loss") == [1, 2, 3]
    log = Path(client.download_artifacts(run.info.run_id, "training/training.log", str(tmp_path))).read_text()
    assert "after epoch 1" in log and log.count("resumed from") == 1
    assert_all_cpus_come_back()


# --- the scheduler -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_several_asha_stops_then_more_trials_on_the_same_cluster(tmp_path, corpus, local_ray):
    # one at a time, the first trial learning and the others not (lr 1e-7 and 2e-7): ASHA stops both later ones
    # at epoch 1 while their Tune functions are inside TorchTrainer.fit() (what leaked their CPUs before)
    fields = {k: v for k, v in TINY_FIELDS.items() if k != "lr"}
    space = tmp_path / "asha.py"
    space.write_text(
        "from ray import tune\n"
        f"SPACE = {{'lr': tune.grid_search([3e-3, 1e-7, 2e-7]), 'epochs': 2, **{fields!r}}}\n"
        "ASHA = {'grace_period': 1, 'reduction_factor': 2}\n"
    )
    result = run_sweep(options(tmp_path, corpus, space, scheduler="asha", cpus_per_trial=2.0, ship=False, name="asha"))
    client = MlflowClient(result.tracking_uri)
    runs = child_runs(client, result)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs), [r.data.tags for r in runs]
    assert sorted(int(r.data.metrics["epochs_trained"]) for r in runs) == [1, 1, 2]  # two stopped at the rung

    # the same cluster runs the next sweep at full width: two trials side by side, one CPU each
    after = run_sweep(
        options(
            tmp_path,
            corpus,
            write_space(tmp_path, '["simple", "weighted"]', "after.py", epochs=1),
            cpus_per_trial=1.0,
            ship=False,
            name="after",
        )
    )
    assert [t.status for t in after.trials] == ["FINISHED", "FINISHED"]
    assert_all_cpus_come_back()


@pytest.mark.slow
def test_a_trial_that_gets_no_resources_fails_in_bounded_time_naming_who_holds_them(tmp_path, corpus, local_ray):
    holder = ray.util.placement_group([{"CPU": 1.5}])  # a live job's reservation the trial cannot have
    ray.get(holder.ready(), timeout=60)
    wait_s = 5.0
    try:
        started = time.monotonic()
        result = run_sweep(
            options(
                tmp_path,
                corpus,
                write_space(tmp_path, epochs=1),
                ship=False,
                cpus_per_trial=2.0,
                resource_wait_s=wait_s,
            )
        )
        took = time.monotonic() - started
    finally:
        ray.util.remove_placement_group(holder)
    (trial,) = result.trials
    client = MlflowClient(result.tracking_uri)
    error = client.get_run(trial.run_id).data.tags["avasr.error"]
    assert trial.status == "FAILED" and "got no {'CPU': 1.99} in 2 waits of 5 s" in error, error
    assert f"placement group {holder.id.hex()[:8]} (CREATED, CPU 1.5)" in error, error
    assert took < 180, took  # two Tune attempts (it reruns a failed trial once) of 2 x 5 s each, plus start-up
    assert_all_cpus_come_back()


# --- the driver --------------------------------------------------------------------------------------------------
def second_trial_started(train_runs: Path, tracking_uri: str) -> bool:
    """The second trial's child run exists: created by its Tune function seconds before its Train run starts.

    The store is read only once the first trial has checkpoints: by then the driver has created the database
    (two processes creating one sqlite store race on its schema)."""
    if not list(train_runs.glob("*_00000/checkpoint_*")):
        return False
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return bool(client.search_runs(experiments, filter_string=f"tags.`{TRIAL_TAG}` LIKE '%_00001'"))


def stop_during_second_trial(
    driver: subprocess.Popen, train_runs: Path, tracking_uri: str, log: Path, how: signal.Signals
) -> float:
    """SIGINT (Ctrl-C) or SIGKILL to the sweep once its first trial has finished and its second has started."""
    deadline = time.monotonic() + SECOND_TRIAL_WITHIN_S
    while not second_trial_started(train_runs, tracking_uri):
        assert driver.poll() is None, f"the sweep ended before its second trial: {tail(log)}"
        assert time.monotonic() < deadline, f"no second trial within {SECOND_TRIAL_WITHIN_S} s: {tail(log)}"
        time.sleep(0.2)
    stopped_at = time.time()
    driver.send_signal(how)  # one trial at a time: the first has finished, the second has not
    expected = 130 if how == signal.SIGINT else -signal.SIGKILL  # 130: "interrupted: continue with --resume"
    assert driver.wait(timeout=STOP_WITHIN_S) == expected, tail(log)
    return stopped_at


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_a_stopped_driver_resumes_without_rerunning_finished_trials(tmp_path, corpus, local_ray, how):
    space = write_space(tmp_path, fusion='["simple", "weighted"]', epochs=2)
    opts = options(tmp_path, corpus, space, ship=False, cpus_per_trial=2.0)  # one trial at a time
    command = [
        sys.executable,
        str(PROJECT / "experiments" / "sweep_fusion.py"),
        "--space",
        opts.space,
        "--train-manifest",
        opts.train_manifest,
        "--val-manifest",
        opts.val_manifest,
        "--storage-path",
        opts.storage_path,
        "--mlflow-uri",
        opts.mlflow_uri,
        "--cache-dir",
        opts.cache_dir,
        "--scheduler",
        "fifo",
        "--cpus-per-trial",
        "2",
        "--no-ship",
        "--address",
        ray.get_runtime_context().gcs_address,
    ]
    log = tmp_path / "driver.log"  # a file, not a pipe: a driver never blocks on output nobody reads
    with log.open("wb") as out:
        driver = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        stopped_at = stop_during_second_trial(
            driver, Path(opts.storage_path) / opts.name / "train_runs", opts.mlflow_uri, log, how
        )
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
    assert all(m.timestamp / 1000 < stopped_at for m in first)  # nothing of the finished trial ran again
    assert steps(client, runs["00001"].info.run_id, "val_loss") == [1, 2]
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    assert_all_cpus_come_back()


# --- the tracking server -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_tracking_server_killed_mid_sweep_is_caught_up_when_it_is_back(tmp_path, corpus, local_ray):
    epochs = 20  # ~0.1-0.2 s each: training goes on for seconds after the first epoch is logged
    server = MlflowServer(tmp_path / "mlflow")
    opts = options(
        tmp_path, corpus, write_space(tmp_path, epochs=epochs), ship=False, cpus_per_trial=2.0, mlflow_uri=server.uri
    )

    def first_epoch_logged() -> bool:
        client = MlflowClient(server.uri)
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], filter_string=f"tags.`{TRIAL_TAG}` != ''"
        )
        return bool(runs) and bool(steps(client, runs[0].info.run_id, "val_loss"))

    outage = []

    def crash_and_restart() -> None:
        outage.append(time.time())
        server.kill()
        time.sleep(SERVER_DOWN_S)  # the worker trains on meanwhile
        outage.append(time.time())  # nothing can be logged before the new server starts
        server.start()

    injector = Injector(first_epoch_logged, crash_and_restart, "a first epoch in MLflow")
    try:
        server.start()  # inside: a server too slow to answer is stopped too
        injector.start()
        result = run_sweep(opts)
        injector.join(timeout=FAULT_WITHIN_S)
        assert injector.done, injector.error
        client = MlflowClient(server.uri)
        (run,) = child_runs(client, result)
        assert run.info.status == "FINISHED", run.data.tags
        assert steps(client, run.info.run_id, "val_loss") == list(range(1, epochs + 1))  # each epoch once
        assert {"val_wer", "cpu_latency_ms_p50"} <= set(run.data.metrics)
        assert client.get_run(result.parent_run_id).info.status == "FINISHED"
        # training went on while the server was down (several epochs ended then), and those epochs were logged
        # once it was back: the outage was caught up
        log = Path(client.download_artifacts(run.info.run_id, "training/training.log", str(tmp_path))).read_text()
        down, back = outage
        during = [epoch for epoch, ended in epoch_lines(log) if down < ended < back]
        assert len(during) >= 2, (outage, epoch_lines(log))
        history = client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "val_loss")
        logged_at = {m.step: m.timestamp / 1000 for m in history}
        assert all(logged_at[epoch] >= back for epoch in during), (during, logged_at, outage)
    finally:
        server.stop()
    assert_all_cpus_come_back()


def test_a_tracking_server_that_stays_down_ends_the_wait_with_a_clear_error():
    (port,) = free_ports(1)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(
        TrackingError,
        match=r"MLflow tracking server http://127.0.0.1:\d+ is unreachable .*"
        r"waited 1 s for it \(--mlflow-wait-s\)",
    ):
        wait_for_store(f"http://127.0.0.1:{port}", timeout_s=1)
    assert time.monotonic() - started < 10


def test_epochs_the_store_refuses_wait_and_go_with_the_next_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    (port,) = free_ports(1)
    store = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = store.create_run(store.create_experiment("e")).info.run_id
    row = {
        "train_loss": 2.0,
        "val_loss": 1.5,
        "val_wer": 1.0,
        "val_cer": 0.9,
        "lr": 1e-3,
        "seconds": 0.5,
        "data_s": 0.1,
        "step_s": 0.3,
        "eval_s": 0.05,
        "save_s": 0.05,
    }
    log_epoch = EpochLog(MlflowClient(f"http://127.0.0.1:{port}"), run_id, retry_after_s=0)  # a server that is down
    log_epoch({"epoch": 1, **row})  # no exception: training goes on
    assert [p["epoch"] for p in log_epoch.pending] == [1]
    log_epoch.client = store  # the store is back
    log_epoch({"epoch": 2, **row})
    assert log_epoch.pending == [] and steps(store, run_id, "val_loss") == [1, 2]
    log_epoch.logged = None  # as after a lost answer: the store is read again, and nothing is logged twice
    log_epoch({"epoch": 2, **row})
    assert steps(store, run_id, "val_loss") == [1, 2]


def test_the_curves_are_the_columns_of_metrics_csv():
    assert ("epoch", *EPOCH_METRICS) == METRIC_FIELDS
