"""The cluster recipe of docs/cluster.md, end to end: a real `mlflow server`, a real `ray start --head`, the sweep
submitted with `ray job submit`, then its runs, artifacts and champion read back from the tracking server.

Everything this test starts is its own and is stopped by it alone. It never runs `ray stop`: that kills every
Ray process on the machine, including the local clusters of other tests (tests/test_sweep.py) and of test runs
in other checkouts. Instead `ray start --block` keeps the head's processes as its children: SIGTERM to it stops
them all, and a SIGKILL to its process group follows for anything left. The cluster has its own temporary
folder, ports and token (Ray's token authentication is on by default), so nothing connects to it by accident.
"""

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
from mlflow import MlflowClient
from onnx import numpy_helper

from avasr.config import Config
from avasr.data.manifest import write_manifest
from avasr.model import build_model, count_parameters
from avasr.sweep.champion import CHAMPION_ONNX
from avasr.sweep.driver import DEFAULT_EXPERIMENT
from avasr.sweep.tracking import PARENT_TAG, global_uris
from tests.media import write_clip
from tests.servers import BIN, HOST, POLL_S, START_TIMEOUT_S, MlflowServer, free_ports, stop_group, wait_until_up

PROJECT = Path(__file__).resolve().parents[1]
# Ray's unix sockets live under its temp dir and their paths must stay under ~107 characters: a short root.
RAY_TEMP_ROOT = "/tmp" if Path("/tmp").is_dir() else None
JOB_TIMEOUT_S = 600  # ~90 s quiet; CI machines are shared and can be several times slower
# Uploaded with the job: the project's code only. Ray also honours .gitignore; these make it explicit.
UPLOAD_EXCLUDES = ["/.git/", "/.venv/", "/data/", "/outputs/", "/mlartifacts/", "/mlflow.db", "/.pytest_cache/"]
TERMINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "STOPPED")

TRANSCRIPTS = ["bin blue", "lay red", "set green", "place at", "bin now", "lay soon"]
CLIP_SECONDS = 1.2  # 30 video frames: enough for CTC on every transcript above
FUSIONS = ["simple", "attention"]
TINY_FIELDS = {
    "dropout": 0.1,
    "lr": 3e-3,
    "batch_size": 2,
    "lip_size": 16,
    "encoder_channels": [4, 8, 8],
    "feature_dim": 16,
    "temporal_layers": 1,
    "device": "cpu",
    "epochs": 2,
}
FINAL_METRICS = ("val_wer", "val_cer", "param_count", "cpu_latency_ms_p50", "cpu_latency_ms_p95")
SWEEP_NAME = "cluster-smoke"


# --- processes this test owns ------------------------------------------------------------------------------------
@pytest.fixture
def mlflow_server(tmp_path) -> Iterator[str]:
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        yield server.uri
    finally:
        server.stop()


@dataclass(frozen=True)
class RayHead:
    dashboard: str  # http://127.0.0.1:PORT: where `ray job submit` and the Jobs REST API go
    env: dict  # what the ray CLI needs to reach it (the cluster's token)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"}


@pytest.fixture
def ray_head() -> Iterator[RayHead]:
    """A one-node Ray cluster (2 CPUs) with its own temp dir, ports and token."""
    temp_dir = Path(tempfile.mkdtemp(prefix="avasr-ray-", dir=RAY_TEMP_ROOT))
    gcs, dashboard, agent, client = free_ports(4)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={gcs}",
        f"--dashboard-host={HOST}",
        f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent}",
        f"--ray-client-server-port={client}",
        "--num-cpus=2",
        "--num-gpus=0",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    log = temp_dir / "ray_start.log"
    with open(log, "w") as out:
        head = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = RayHead(f"http://{HOST}:{dashboard}", env)
    try:
        wait_until_up(f"{cluster.dashboard}/api/version", head, log, cluster.headers)
        yield cluster
    finally:
        stop_group(head, leader_only=True)  # `ray start --block` stops its own processes on SIGTERM
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- the job -----------------------------------------------------------------------------------------------------
def jobs_api(cluster: RayHead, path: str, method: str = "GET") -> dict:
    """Ray's Jobs REST API (GET /api/jobs/<id>, /api/jobs/<id>/logs, POST /api/jobs/<id>/stop)."""
    request = urllib.request.Request(f"{cluster.dashboard}/api/jobs/{path}", method=method, headers=cluster.headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def wait_for_job(cluster: RayHead, job_id: str) -> tuple[str, str]:
    """(final status, the job's logs); a job still running after JOB_TIMEOUT_S is stopped."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    status = "PENDING"
    while status not in TERMINAL_JOB_STATES and time.monotonic() < deadline:
        time.sleep(POLL_S)
        status = jobs_api(cluster, job_id)["status"]
    if status not in TERMINAL_JOB_STATES:
        jobs_api(cluster, f"{job_id}/stop", method="POST")
        status = f"{status} after {JOB_TIMEOUT_S} s (stopped)"
    return status, jobs_api(cluster, f"{job_id}/logs")["logs"]


def write_corpus(root: Path) -> tuple[Path, Path]:
    """Four training and two validation clips of a real face with a tone as audio: (train, val) manifests."""
    rows = [(*write_clip(root / "clips", f"u{i}", CLIP_SECONDS), text) for i, text in enumerate(TRANSCRIPTS)]
    write_manifest(root / "train_manifest.txt", rows[:4])
    write_manifest(root / "val_manifest.txt", rows[4:])
    return root / "train_manifest.txt", root / "val_manifest.txt"


def write_space(path: Path) -> Path:
    path.write_text(f"from ray import tune\nSPACE = {{'fusion': tune.grid_search({FUSIONS!r}), **{TINY_FIELDS!r}}}\n")
    return path


# --- the test ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_submitted_to_a_ray_cluster_is_tracked_on_an_mlflow_server(tmp_path, mlflow_server, ray_head):
    train, val = write_corpus(tmp_path / "corpus")
    storage = tmp_path / "sweeps"
    # The entry point is a shell command on the head node: `python` would be whatever the PATH of `ray start`
    # finds, so the venv's interpreter is named by its absolute path (see docs/cluster.md).
    entrypoint = [
        sys.executable,
        "experiments/sweep_fusion.py",
        "--space",
        str(write_space(tmp_path / "space.py")),
        "--train-manifest",
        str(train),
        "--val-manifest",
        str(val),
        "--mlflow-uri",
        mlflow_server,
        "--storage-path",
        str(storage),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--name",
        SWEEP_NAME,
        "--scheduler",
        "fifo",
        "--address",
        "auto",
    ]
    job_id = f"avasr_test_{secrets.token_hex(4)}"
    submit = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            ray_head.dashboard,
            "--submission-id",
            job_id,
            "--no-wait",
            "--working-dir",
            str(PROJECT),
            "--runtime-env-json",
            json.dumps({"excludes": UPLOAD_EXCLUDES}),
            "--",
            *entrypoint,
        ],
        env=ray_head.env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    status, logs = wait_for_job(ray_head, job_id)
    assert status == "SUCCEEDED", f"job {status}; entrypoint {shlex.join(entrypoint)}\n{logs[-6000:]}"
    assert "registered as avasr@champion" in logs, logs[-3000:]

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert (parent.info.run_name, parent.info.status, len(runs)) == (SWEEP_NAME, "FINISHED", 1 + len(FUSIONS))
    assert sorted(r.data.params["fusion"] for r in children) == sorted(FUSIONS)
    for run in children:
        metrics = run.data.metrics
        assert run.info.status == "FINISHED" and set(FINAL_METRICS) <= set(metrics), (run.info, metrics)
        config = Config.from_dict({**TINY_FIELDS, "fusion": run.data.params["fusion"]})
        assert metrics["param_count"] == count_parameters(build_model(config))
        assert 0 < metrics["cpu_latency_ms_p50"] <= metrics["cpu_latency_ms_p95"]
        assert 0 <= metrics["val_cer"] and 0 <= metrics["val_wer"]
        # artifacts went through the server into its own folder, not into a path the job wrote directly
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/training_curves.png"]
    assert list((tmp_path / "mlflow" / "artifacts").rglob("training_curves.png"))

    champion = client.get_model_version_by_alias("avasr", "champion")
    assert champion.run_id == parent.data.tags["avasr.champion_run_id"]
    assert champion.run_id in {r.info.run_id for r in children}
    with global_uris(mlflow_server):  # models:/ URIs resolve through the global registry URI
        model_dir = Path(
            mlflow.artifacts.download_artifacts("models:/avasr@champion", dst_path=str(tmp_path / "model"))
        )
    (served,) = model_dir.rglob("*.onnx")
    shipped = onnx.load(str(storage / SWEEP_NAME / CHAMPION_ONNX))
    assert [i.name for i in onnx.load(str(served)).graph.input] == [i.name for i in shipped.graph.input]
    served_weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(served)).graph.initializer}
    shipped_weights = {t.name: numpy_helper.to_array(t) for t in shipped.graph.initializer}
    assert served_weights.keys() == shipped_weights.keys()  # the very model shipped, not any avasr model
    assert all(np.array_equal(served_weights[k], shipped_weights[k]) for k in shipped_weights)
    assert (model_dir / "MLmodel").is_file()
