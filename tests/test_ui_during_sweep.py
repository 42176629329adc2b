"""The MLflow UI that `make ui` starts answers while a sweep keeps both cores busy training: people watch a sweep
as it runs."""

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.servers import HOST, free_ports, stop_group
from tests.sweeps import write_corpus, write_space

PROJECT = Path(__file__).resolve().parents[1]
TRAINING_WITHIN_S = 240  # Ray, the cache and the first trial's worker on a loaded 2-core machine
UI_WITHIN_S = 120  # measured: 18 s with one worker while training holds both cores


def first_child_running(uri: str) -> bool:
    client = MlflowClient(uri)
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            if "mlflow.parentRunId" in run.data.tags and run.info.status == "RUNNING":
                return True
    return False


def health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow
def test_make_ui_answers_while_a_sweep_trains(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    space = write_space(tmp_path, fusion='["simple", "attention"]', epochs=400, patience=400)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        sys.executable,
        str(PROJECT / "experiments" / "sweep_fusion.py"),
        *("--space", str(space), "--name", "watched", "--storage-path", str(tmp_path / "sweeps")),
        *("--train-manifest", str(corpus / "train_manifest.txt"), "--val-manifest", str(corpus / "val_manifest.txt")),
        *("--mlflow-uri", uri, "--cache-dir", str(corpus / "cache"), "--scheduler", "fifo", "--no-ship"),
    ]
    log = (tmp_path / "sweep.log").open("w")
    sweep = subprocess.Popen(command, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ui = None
    try:
        deadline = time.monotonic() + TRAINING_WITHIN_S
        while not first_child_running(uri):
            assert sweep.poll() is None, f"the sweep ended before training: {(tmp_path / 'sweep.log').read_text()}"
            assert time.monotonic() < deadline, f"no trial training after {TRAINING_WITHIN_S} s"
            time.sleep(2)
        (port,) = free_ports(1)
        ui_log = (tmp_path / "ui.log").open("w")
        ui = subprocess.Popen(
            ["make", "-s", "ui", f"UI_PORT={port}", f"MLFLOW_URI={uri}"],
            cwd=PROJECT,
            stdout=ui_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.monotonic()
        while not health(port):
            assert ui.poll() is None, f"make ui exited: {(tmp_path / 'ui.log').read_text()[-3000:]}"
            waited = time.monotonic() - started
            assert waited < UI_WITHIN_S, f"the UI did not answer /health in {UI_WITHIN_S} s while the sweep trained"
            time.sleep(1)
        assert sweep.poll() is None, "the sweep ended before the UI answered: it proved nothing; train longer"
        assert first_child_running(uri)
    finally:
        if ui is not None:
            stop_group(ui, leader_only=False)
        stop_group(sweep, leader_only=False)
