import csv

import pytest
import torch

from avasr.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    CheckpointError,
    load_checkpoint,
    load_model,
    restore_rng_state,
)
from avasr.config import Config, ConfigError
from avasr.data.dataset import Batch, collate
from avasr.data.loader import make_loader
from avasr.evaluation import evaluate
from avasr.features import ctc_min_frames
from avasr.model import build_model
from avasr.objective import ctc_objective
from avasr.train import (
    AVERAGED_STEPS,
    LOG_FILE,
    METRICS_FILE,
    TRAINED_WEIGHTS,
    fit,
    learning_rate,
    moving_average,
    seed_everything,
    train_one_epoch,
)
from tests.synthetic import TINY, dataset


def test_ctc_min_frames_counts_repeats():
    assert ctc_min_frames([3, 4, 4, 4, 5]) == 7
    assert ctc_min_frames([]) == 0


def test_label_smoothing_mixes_in_the_uniform_cross_entropy():
    batch = collate(dataset().utterances[:2])
    T = batch.video.shape[1]
    uniform = torch.full((2, T, 29), -torch.log(torch.tensor(29.0)))
    plain = ctc_objective(uniform, batch, 0.0)
    # under a uniform posterior the smoothing term equals log(29) exactly
    smoothed = ctc_objective(uniform, batch, 0.1)
    assert smoothed.item() == pytest.approx(0.9 * plain.item() + 0.1 * torch.log(torch.tensor(29.0)).item(), rel=1e-6)


def test_infeasible_ctc_batch_is_refused_with_its_ids():
    batch = collate(dataset().utterances[:1])
    short: Batch = batch._replace(video_lengths=torch.tensor([2]))
    with pytest.raises(RuntimeError, match=r"non-finite CTC loss in batch \['synth/0'\]"):
        ctc_objective(torch.randn(1, batch.video.shape[1], 29).log_softmax(-1), short, 0.0)


def test_tiny_model_overfits_eight_utterances_to_wer_zero(tmp_path):
    data = dataset()
    config = TINY.replace(epochs=150, patience=150, output_dir=str(tmp_path), lr_decay_patience=1000)
    best = fit(config, datasets=(data, data))
    print("overfit:", {k: best[k] for k in ("epoch", "val_wer", "val_cer", "val_loss")})
    assert best["val_wer"] == 0.0 and best["val_cer"] == 0.0
    model, loaded_config = load_model(tmp_path / BEST_CHECKPOINT)
    assert loaded_config == config


def test_outputs_checkpoints_log_and_csv(tmp_path):
    data = dataset()
    reports = []
    fit(TINY.replace(output_dir=str(tmp_path)), datasets=(data, data), report=lambda m, d: reports.append((m, d)))
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    assert all(d == tmp_path and (d / LAST_CHECKPOINT).exists() for _, d in reports)
    rows = list(csv.DictReader((tmp_path / METRICS_FILE).open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert "epoch 2: train_loss" in (tmp_path / LOG_FILE).read_text()
    checkpoint = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=True)  # plain types only
    assert checkpoint["state"]["epoch"] == 2 and checkpoint["config"]["fusion"] == "adaptive"
    assert not list(tmp_path.glob("*.tmp"))


def without_time(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


def next_step_loss(model, optimizer, data, config, epoch: int) -> float:
    """Loss of the first optimisation step of `epoch` (0-based), in training mode."""
    model.train()
    batch = next(iter(make_loader(data, config, shuffle=True, epoch=epoch)))
    return ctc_objective(model(batch.audio, batch.video, batch.video_lengths), batch, config.label_smoothing).item()


@pytest.mark.parametrize(
    "fusion,schedule,ema_decay",
    [("adaptive", "plateau", 0.0), ("attention", "cosine", 0.0), ("weighted", "cosine", 0.9)],
)
def test_resume_continues_exactly(tmp_path, fusion, schedule, ema_decay):
    data = dataset()
    config = TINY.replace(
        fusion=fusion,
        dropout=0.3,
        label_smoothing=0.1,
        epochs=3,  # dropout: RNG matters
        lr_schedule=schedule,
        warmup_epochs=1.5,
        ema_decay=ema_decay,  # the average continues: its step count and weights come back
    )  # the resumed epoch starts mid-warm-up
    full = fit(config.replace(output_dir=str(tmp_path / "full")), datasets=(data, data))

    fit(config.replace(output_dir=str(tmp_path / "cut"), epochs=2), datasets=(data, data))
    resumed = fit(
        config.replace(output_dir=str(tmp_path / "cut")),
        datasets=(data, data),
        resume=tmp_path / "cut" / LAST_CHECKPOINT,
    )
    full_rows = list(csv.DictReader((tmp_path / "full" / METRICS_FILE).open()))
    cut_rows = list(csv.DictReader((tmp_path / "cut" / METRICS_FILE).open()))
    assert [r["epoch"] for r in cut_rows] == ["1", "2", "3"]
    for key in ("train_loss", "val_loss", "val_wer", "lr"):
        assert [r[key] for r in cut_rows] == [r[key] for r in full_rows], key
    assert without_time(resumed) == without_time(full)


def test_resumed_next_step_loss_equals_uninterrupted(tmp_path):
    data = dataset()
    config = TINY.replace(dropout=0.3, label_smoothing=0.1, epochs=1, output_dir=str(tmp_path))
    fit(config, datasets=(data, data))

    # uninterrupted: the same epoch replayed in this process, then the next step
    seed_everything(config.seed)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_one_epoch(model, make_loader(data, config, shuffle=True, epoch=0), optimizer, config, "cpu")
    evaluate(model, make_loader(data, config, shuffle=False), config, "cpu")
    uninterrupted = next_step_loss(model, optimizer, data, config, epoch=1)

    # resumed: a fresh process state (other RNG), everything restored from the checkpoint
    torch.manual_seed(12345)
    checkpoint = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    model = build_model(config)
    model.load_state_dict(checkpoint["model"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    optimizer.load_state_dict(checkpoint["optimizer"])
    restore_rng_state(checkpoint["rng"])
    assert next_step_loss(model, optimizer, data, config, epoch=checkpoint["state"]["epoch"]) == uninterrupted


def test_moving_average_starts_at_the_weights_then_decays_towards_them():
    model = torch.nn.Linear(1, 1, bias=False)
    averaged = moving_average(model, decay=0.75)
    for weight in (4.0, 8.0, 0.0):
        model.weight.data.fill_(weight)
        averaged.update_parameters(model)
    assert averaged.module.weight.item() == pytest.approx(0.75 * (0.75 * 4.0 + 0.25 * 8.0) + 0.25 * 0.0)
    assert int(averaged.n_averaged) == 3
    assert moving_average(model, decay=0.0) is None


def test_averaged_weights_are_scored_and_kept_as_the_model(tmp_path):
    data = dataset()
    config = TINY.replace(output_dir=str(tmp_path), ema_decay=0.9, epochs=2)
    fit(config, datasets=(data, data))
    checkpoint = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    steps = sum(len(make_loader(data, config, shuffle=True, epoch=epoch)) for epoch in range(2))
    assert checkpoint[AVERAGED_STEPS] == steps
    logged = list(csv.DictReader((tmp_path / METRICS_FILE).open()))[-1]

    def val_loss(weights) -> float:
        model = build_model(config)
        model.load_state_dict(weights)
        return evaluate(model, make_loader(data, config, shuffle=False), config, "cpu")["loss"]

    assert float(logged["val_loss"]) == pytest.approx(val_loss(checkpoint["model"]), rel=1e-6)
    assert float(logged["val_loss"]) != pytest.approx(val_loss(checkpoint[TRAINED_WEIGHTS]), rel=1e-3)
    assert float(logged["val_loss"]) == pytest.approx(val_loss(load_model(tmp_path / LAST_CHECKPOINT)[0].state_dict()))


def test_determinism_under_a_seed(tmp_path):
    data = dataset()
    a = fit(TINY.replace(output_dir=str(tmp_path / "a"), dropout=0.2), datasets=(data, data))
    b = fit(TINY.replace(output_dir=str(tmp_path / "b"), dropout=0.2), datasets=(data, data))
    assert without_time(a) == without_time(b)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth: cannot load checkpoint"):
        load_checkpoint(tmp_path / "bad.pth")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")  # a torch file, not one of ours
    with pytest.raises(CheckpointError, match="foreign.pth: not a checkpoint written by avasr training"):
        load_checkpoint(tmp_path / "foreign.pth")


def test_modalities_blank_the_other_stream():
    batch = collate(dataset().utterances[:2])
    audio_only, video_only = batch.keep_modalities("audio"), batch.keep_modalities("video")
    assert torch.equal(audio_only.audio, batch.audio) and not audio_only.video.any()
    assert torch.equal(video_only.video, batch.video) and not video_only.audio.any()
    assert batch.keep_modalities("audio+video") is batch


@pytest.mark.parametrize("modalities", ["audio", "video"])
def test_one_modality_alone_can_be_learned(tmp_path, modalities):
    data = dataset()  # both streams encode the characters, so either alone suffices
    config = TINY.replace(
        modalities=modalities, epochs=150, patience=150, output_dir=str(tmp_path), lr_decay_patience=1000
    )
    assert fit(config, datasets=(data, data))["val_cer"] < 0.2


def test_learning_rate_warms_up_then_follows_its_schedule():
    plateau = Config(lr=1e-3, warmup_epochs=1.0, lr_decay_factor=0.5)
    assert [learning_rate(plateau, step, 3) for step in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert learning_rate(plateau, 10, 3, lr_decays=2) == pytest.approx(2.5e-4)
    assert learning_rate(Config(lr=1e-3), 0, 3) == 1e-3  # no warm-up: the original's constant start
    cosine = Config(lr=1e-3, lr_schedule="cosine", epochs=4, warmup_epochs=0.0, lr_final_ratio=0.1)
    lrs = [learning_rate(cosine, step, 10) for step in range(41)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[20] == pytest.approx(5.5e-4) and lrs[40] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert learning_rate(cosine, 400, 10) == pytest.approx(1e-4)  # past the last epoch: stays at the floor


def test_bad_schedule_fields_are_refused():
    with pytest.raises(ConfigError, match="lr_schedule='step' is not one of plateau, cosine"):
        Config(lr_schedule="step")
    with pytest.raises(ConfigError, match="warmup_epochs >= 0"):
        Config(warmup_epochs=-1)
    for decay in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=rf"ema_decay must be in \[0, 1\), got {decay}"):
            Config(ema_decay=decay)
