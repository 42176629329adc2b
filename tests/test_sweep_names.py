"""A sweep's name is its folder: an existing one is refused unless resumed, and a resume needs something to resume.
Both are refused before Ray starts or any run is tracked."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from avasr.sweep.driver import STATE_FILE, SweepError, run_sweep
from tests.sweeps import options, write_space

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def manifests(tmp_path) -> Path:
    """Manifests that are never read as media: the refusals come first."""
    for name in ("train_manifest.txt", "val_manifest.txt"):
        (tmp_path / name).write_text("u0.wav|u0.mp4|bin blue\n")
    return tmp_path


def tracked_runs(tracking_uri: str) -> list:
    client = MlflowClient(tracking_uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_sweep_name_that_exists_is_refused_without_resume(manifests, tmp_path):
    opts = options(tmp_path, manifests, write_space(tmp_path), name="taken")
    folder = Path(opts.storage_path).resolve() / "taken"
    folder.mkdir(parents=True)
    (folder / "kept.txt").write_text("an earlier sweep's files")
    refusal = rf"^{re.escape(str(folder))} already holds a sweep: pass --resume to continue it"
    with pytest.raises(SweepError, match=refusal):
        run_sweep(opts)
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]
    assert tracked_runs(opts.mlflow_uri) == []


def test_a_resume_with_nothing_to_resume_is_refused(manifests, tmp_path):
    opts = options(tmp_path, manifests, write_space(tmp_path), name="never-ran", resume=True)
    folder = Path(opts.storage_path).resolve() / "never-ran"
    refusal = rf"^{re.escape(str(folder))}: nothing to resume \(no {STATE_FILE}\); run without --resume"
    with pytest.raises(SweepError, match=refusal):
        run_sweep(opts)
    assert not folder.exists() and tracked_runs(opts.mlflow_uri) == []


@pytest.mark.slow
def test_the_command_line_refuses_an_existing_name_in_one_line(manifests, tmp_path):
    opts = options(tmp_path, manifests, write_space(tmp_path), name="taken")
    (Path(opts.storage_path) / "taken").mkdir(parents=True)
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
        "--name",
        "taken",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().endswith("already holds a sweep: pass --resume to continue it, or another --name")
    assert "Traceback" not in done.stderr
