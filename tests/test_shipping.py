"""Shipping a champion: parity is checked before anything is registered, and shipping the same run twice
registers it once."""

import dataclasses

import pytest
import torch
from mlflow import MlflowClient

from avasr.checkpoint import BEST_CHECKPOINT
from avasr.model import build_model
from avasr.ship.export import ParityError, export_onnx
from avasr.sweep import tracking
from avasr.sweep.champion import TrialSummary
from avasr.sweep.shipping import ship
from avasr.train import fit
from tests.synthetic import TINY, dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trial")
    config = TINY.replace(epochs=1, output_dir=str(folder), train_manifest="t.txt", val_manifest="v.txt")
    fit(config, datasets=(dataset(), dataset()))
    return folder, config


def summary(folder, onnx_path, run_id) -> TrialSummary:
    return TrialSummary(
        run_id, "t", "FINISHED", "adaptive", 0.0, 3e-3, 0.5, 0.3, 1, 1.0, 1.0, str(folder), str(onnx_path)
    )


def a_run(uri: str) -> str:
    client = MlflowClient(uri)
    experiment = tracking.ensure_experiment(client, "ship-test", uri)
    return client.create_run(experiment).info.run_id


def test_an_onnx_file_that_disagrees_with_its_checkpoint_is_never_registered(tmp_path, trained):
    folder, config = trained
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    torch.manual_seed(123)  # other weights: the file is not this checkpoint's model
    impostor = export_onnx(build_model(config).eval(), config, tmp_path / "impostor.onnx")
    run_id = a_run(uri)
    with pytest.raises(ParityError):
        ship(summary(folder, impostor, run_id), uri, tmp_path / "champion.onnx")
    assert MlflowClient(uri).search_model_versions("name = 'avasr'") == []


def test_shipping_the_same_run_again_keeps_its_version(tmp_path, trained):
    folder, _ = trained
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = a_run(uri)
    trial = summary(folder, "", run_id)  # no ONNX yet (its latency was measured on another seed): exported now
    first = ship(trial, uri, tmp_path / "champion.onnx")
    again = ship(dataclasses.replace(trial, onnx_path=str(first[0])), uri, tmp_path / "champion.onnx")
    assert first[0].is_file() and first[1] == again[1] == "1"
    client = MlflowClient(uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'avasr'")] == ["1"]
    assert client.get_model_version_by_alias("avasr", "champion").run_id == run_id
    assert (folder / BEST_CHECKPOINT).is_file()
