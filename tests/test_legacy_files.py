"""Files written by earlier avasr versions still load: a checkpoint and an ONNX file exported before the
configuration was split into sections (tests/fixtures/, written once by that code: a tiny attention model, with
one fixed input and the log-probabilities it gave)."""

import dataclasses
from pathlib import Path

import onnx
import pytest
import torch

from avasr.checkpoint import load_model
from avasr.config import ZERO_PADDING, Config, InferenceConfig, ModelConfig
from avasr.model import build_model
from avasr.ship.export import CONFIG_METADATA_KEY, cpu_session, export_onnx, read_config, run_session

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY_IO = torch.load(FIXTURES / "legacy_io.pt", weights_only=True)


def test_a_checkpoint_written_before_the_split_loads_and_gives_the_same_output():
    model, config = load_model(FIXTURES / "legacy_checkpoint.pth")
    assert isinstance(config, Config) and config.fusion == "attention"
    assert config.time_padding == ZERO_PADDING  # trained so: its output below is the one it gave then
    with torch.no_grad():
        log_probs = model(LEGACY_IO["audio"], LEGACY_IO["video"], torch.tensor([LEGACY_IO["video"].shape[1]]))
    torch.testing.assert_close(log_probs, LEGACY_IO["log_probs"], rtol=0, atol=1e-6)


def test_an_onnx_file_written_before_the_split_keeps_only_its_inference_config():
    path = FIXTURES / "legacy_model.onnx"
    stored = {p.key for p in onnx.load_model(str(path)).metadata_props}
    assert CONFIG_METADATA_KEY in stored
    config = read_config(path)
    assert type(config) is InferenceConfig
    assert (config.fusion, config.lip_size, config.encoder_channels) == ("attention", 16, (4, 8, 8))
    assert config.time_padding == ZERO_PADDING
    frames = LEGACY_IO["video"].shape[1]
    log_probs = run_session(cpu_session(path), LEGACY_IO["audio"], LEGACY_IO["video"], torch.tensor([frames]))
    torch.testing.assert_close(torch.from_numpy(log_probs), LEGACY_IO["log_probs"], rtol=0, atol=1e-4)


def test_an_export_carries_model_features_and_decoding_but_no_training_settings(tmp_path):
    config = Config(encoder_channels=(4, 8, 8), feature_dim=16, lip_size=16, train_manifest="/secret/train.txt")
    path = export_onnx(build_model(config.model).eval(), config, tmp_path / "m.onnx")
    stored = read_config(path)
    assert stored == config.inference
    raw = {p.key: p.value for p in onnx.load_model(str(path)).metadata_props}[CONFIG_METADATA_KEY]
    assert "train_manifest" not in raw and "/secret" not in raw and "lr" not in raw


def test_the_model_sees_its_own_config_only():
    config = Config(encoder_channels=(4, 8, 8), feature_dim=16, lip_size=16, lr=0.1, train_manifest="x.txt")
    model = build_model(config)
    assert type(model.config) is ModelConfig and model.config == config.model
    assert {f.name for f in dataclasses.fields(model.config)}.isdisjoint({"lr", "train_manifest", "decoder"})


def test_every_field_belongs_to_exactly_one_section():
    from avasr.config import SECTIONS

    owners = [f.name for section in SECTIONS for f in dataclasses.fields(section)]
    assert len(owners) == len(set(owners))
    assert set(owners) | {"extra"} == {f.name for f in dataclasses.fields(Config)}


@pytest.mark.parametrize("section", ["model", "features", "decoding", "inference"])
def test_sections_round_trip_through_the_flat_config(section):
    config = Config(fusion="weighted", fps=30.0, decoder="beam", beam_size=3)
    part = getattr(config, section)
    assert config.replace(**part.to_dict()) == config
