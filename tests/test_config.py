import argparse

import pytest

from avasr.config import Config, ConfigError, add_config_arguments, config_from_args


def test_defaults_are_the_seed_design():
    c = Config()
    assert (c.sample_rate, c.n_mels, c.window_ms, c.hop_ms) == (16000, 40, 25.0, 10.0)
    assert (c.n_fft, c.hop_length, c.mel_frames_per_second) == (400, 160, 100.0)
    assert (c.lip_size, c.fps, c.audio_samples_per_video_frame) == (64, 25.0, 640.0)
    assert c.encoder_channels == (32, 64, 128) and c.feature_dim == 512
    assert (c.batch_size, c.epochs, c.lr, c.dropout, c.label_smoothing, c.patience) == (16, 50, 5e-4, 0.2, 0.1, 5)
    assert (c.fusion, c.decoder, c.beam_size, c.seed) == ("adaptive", "greedy", 5, 42)


def test_from_dict_coerces_tune_values_and_round_trips():
    c = Config.from_dict({"lr": 1, "batch_size": 8.0, "encoder_channels": [8, 16, 32], "fusion": "attention"})
    assert c.lr == 1.0 and isinstance(c.lr, float)
    assert c.batch_size == 8 and isinstance(c.batch_size, int)
    assert c.encoder_channels == (8, 16, 32)
    assert Config.from_dict(c.to_dict()) == c


def test_unknown_keys_are_refused_by_name():
    with pytest.raises(ConfigError, match="unknown configuration keys: bogus, lr_rate"):
        Config.from_dict({"lr_rate": 1e-3, "bogus": 1})


def test_wrong_types_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"wrong types.*epochs='ten'.*dropout=True"):
        Config.from_dict({"epochs": "ten", "dropout": True})


def test_invalid_values_name_the_valid_ones():
    with pytest.raises(ConfigError, match="fusion='concat' is not one of simple, weighted, attention, adaptive"):
        Config(fusion="concat")
    with pytest.raises(ConfigError, match="dropout must be in"):
        Config(dropout=1.5)
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2\*\*32\), got -1"):  # numpy refuses it in fit
        Config(seed=-1)
    with pytest.raises(ConfigError, match="num_workers must be >= 0, got -1"):
        Config(num_workers=-1)


def parser_with_config_file() -> argparse.ArgumentParser:
    """What experiments/train.py parses: --config FILE and a flag per Config field."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_config_arguments(parser)
    return parser


def test_cli_overrides_only_given_flags(tmp_path):
    parser = parser_with_config_file()
    file = tmp_path / "c.json"
    file.write_text('{"epochs": 7, "lr": 0.01}')
    args = parser.parse_args(
        [
            "--config",
            str(file),
            "--lr",
            "0.0005",
            "--batch-size",
            "4",
            "--fusion",
            "simple",
            "--encoder-channels",
            "4",
            "8",
            "16",
        ]
    )
    c = config_from_args(args)
    assert (c.epochs, c.lr, c.batch_size, c.fusion, c.encoder_channels) == (7, 0.0005, 4, "simple", (4, 8, 16))
    assert c.dropout == Config().dropout


def test_config_file_overrides_a_resumed_base_field_by_field(tmp_path):
    file = tmp_path / "c.json"
    file.write_text('{"lr": 0.01}')
    base = Config(epochs=7, fusion="attention")  # e.g. the config stored in the checkpoint being resumed
    c = config_from_args(parser_with_config_file().parse_args(["--config", str(file), "--batch-size", "4"]), base)
    assert (c.epochs, c.fusion, c.lr, c.batch_size) == (7, "attention", 0.01, 4)


def test_cli_refuses_unknown_fusion(capsys):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--fusion", "concat"])
    assert "invalid choice: 'concat'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("lr_decay_patience", 0, "lr_decay_patience must be positive"),
        ("temporal_kernel", 4, "temporal_kernel must be odd"),
        ("hop_ms", 0.0, "hop_ms must be positive"),
        ("encoder_channels", (8, 0, 8), "encoder_channels must be positive"),
    ],
)
def test_values_that_would_fail_later_are_refused_now(field, value, message):
    with pytest.raises(ConfigError, match=message):
        Config(**{field: value})
