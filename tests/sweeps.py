"""What the tests of real sweeps share: a tiny corpus and model, a space file, sweep options, reading runs back,
and the check every fault test ends with (all the cluster's CPUs free again)."""

import time
from pathlib import Path

import ray
from mlflow import MlflowClient

from avasr.data.manifest import write_manifest
from avasr.sweep.driver import SweepOptions
from avasr.sweep.resources import who_holds
from avasr.sweep.tracking import EPOCH_PREFIX, PARENT_TAG
from tests.media import write_clip

TRANSCRIPTS = ["bin blue", "lay red", "set green", "place at", "bin now", "lay soon"]
CLIP_SECONDS = 1.2  # 30 video frames: enough for CTC on every transcript above
TINY_FIELDS = {
    "dropout": 0.1,
    "lr": 3e-3,
    "batch_size": 2,
    "lip_size": 16,
    "encoder_channels": [4, 8, 8],
    "feature_dim": 16,
    "temporal_layers": 1,
    "device": "cpu",
}
CLUSTER_CPUS = 2
# Ray gives a stopped trial's CPUs back within seconds (the sweep releases orphaned placement groups every second);
# generous for shared CI machines, only ever reached by a leak.
CPUS_BACK_WITHIN_S = 120


def write_corpus(root: Path) -> Path:
    """Four training and two validation clips of a real face (Haar needs one) with a tone as audio."""
    rows = [(*write_clip(root / "clips", f"u{i}", CLIP_SECONDS), text) for i, text in enumerate(TRANSCRIPTS)]
    write_manifest(root / "train_manifest.txt", rows[:4])
    write_manifest(root / "val_manifest.txt", rows[4:])
    return root


def write_space(folder: Path, fusion: str = '["simple"]', name: str = "space.py", **fields) -> Path:
    """A space file: a grid over the fusions given as Python source, every other field fixed."""
    path = folder / name
    values = {**TINY_FIELDS, **fields}
    path.write_text(f"from ray import tune\nSPACE = {{'fusion': tune.grid_search({fusion}), **{values!r}}}\n")
    return path


def options(tmp_path: Path, corpus: Path, space: Path, **changes) -> SweepOptions:
    values = dict(
        train_manifest=str(corpus / "train_manifest.txt"),
        val_manifest=str(corpus / "val_manifest.txt"),
        space=str(space),
        storage_path=str(tmp_path / "sweeps"),
        mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db",
        cache_dir=str(corpus / "cache"),
        max_failures=1,
        scheduler="fifo",
    )
    return SweepOptions(**{**values, **changes})


def child_runs(client: MlflowClient, result) -> list:
    return client.search_runs([result.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, EPOCH_PREFIX + key))


def assert_all_cpus_come_back(within_s: float = CPUS_BACK_WITHIN_S) -> None:
    """Every CPU of the local cluster free again, by Ray and the sweep alone: this check removes nothing itself."""
    deadline = time.monotonic() + within_s
    while ray.available_resources().get("CPU", 0.0) < ray.cluster_resources().get("CPU", 0.0):
        assert time.monotonic() < deadline, f"CPUs still held {within_s} s after the sweep: {who_holds('CPU')}"
        time.sleep(0.5)
