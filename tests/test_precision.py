"""bf16: forward passes under torch.autocast, weights and CTC in fp32 (avasr.device, avasr.objective). On CPU it runs
everywhere; the CUDA cases run where torch sees a GPU (scripts/device_check.sh runs this file there)."""

import csv

import pytest
import torch

from avasr.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint, load_model
from avasr.config import ConfigError
from avasr.data.dataset import collate
from avasr.data.loader import make_loader
from avasr.device import autocast
from avasr.evaluation import evaluate
from avasr.model import build_model
from avasr.objective import ctc_objective
from avasr.train import METRICS_FILE, fit
from tests.synthetic import TINY, dataset

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
BF16_LOSS_RTOL = 0.02  # bf16 keeps 8 bits of mantissa: the tiny model's loss moves by well under 1 %


def train_two_epochs(tmp_path, **changes) -> list[dict]:
    data = dataset()
    fit(TINY.replace(output_dir=str(tmp_path), precision="bf16", **changes), datasets=(data, data))
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader((tmp_path / METRICS_FILE).open())]


def check_bf16_run(tmp_path, rows: list[dict]) -> None:
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"] and rows[1]["val_loss"] < rows[0]["val_loss"]
    checkpoint = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    floats = {k: v.dtype for k, v in checkpoint["model"].items() if v.is_floating_point()}
    assert set(floats.values()) == {torch.float32}  # only activations were bf16
    model, config = load_model(tmp_path / BEST_CHECKPOINT)
    assert config.precision == "bf16" and {p.dtype for p in model.parameters()} == {torch.float32}
    batch = collate(dataset().utterances)
    with torch.no_grad():  # the loaded model runs in fp32 without autocast: what export and inference do
        assert model(batch.audio, batch.video, batch.video_lengths).dtype == torch.float32


def test_two_bf16_epochs_lower_the_loss_and_the_checkpoint_loads_in_fp32(tmp_path):
    check_bf16_run(tmp_path, train_two_epochs(tmp_path, device="cpu"))


@CUDA
def test_two_bf16_epochs_on_cuda_lower_the_loss_and_the_checkpoint_loads_in_fp32(tmp_path):
    check_bf16_run(tmp_path, train_two_epochs(tmp_path, device="cuda"))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_bf16_computes_the_layers_in_bf16_and_the_ctc_loss_in_fp32(device):
    torch.manual_seed(0)
    model = build_model(TINY).to(device).eval()
    batch = collate(dataset().utterances).to(device)
    seen = []
    model.ctc_head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    losses = {}
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), autocast(torch.device(device), precision):
            log_probs = model(batch.audio, batch.video, batch.video_lengths)
            losses[precision] = ctc_objective(log_probs, batch, label_smoothing=0.1)
    assert seen == [torch.float32, torch.bfloat16]
    assert losses["bf16"].dtype == torch.float32
    assert losses["bf16"].item() == pytest.approx(losses["fp32"].item(), rel=BF16_LOSS_RTOL)


def test_fp32_runs_without_autocast():
    with autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_evaluation_in_bf16_scores_like_fp32():
    torch.manual_seed(0)
    model = build_model(TINY)
    data = dataset()
    results = {
        p: evaluate(model, make_loader(data, TINY, shuffle=False), TINY.replace(precision=p), "cpu")
        for p in ("fp32", "bf16")
    }
    assert results["bf16"]["loss"] == pytest.approx(results["fp32"]["loss"], rel=BF16_LOSS_RTOL)
    assert len(results["bf16"]["hypotheses"]) == len(data)


def test_an_unknown_precision_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"precision='fp16' is not one of fp32, bf16"):
        TINY.replace(precision="fp16")
