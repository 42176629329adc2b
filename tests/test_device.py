"""One device decision (avasr.device): the model, every batch and the DataLoader's pinning follow `pick_device`;
export, parity and latency work on a CPU copy and leave the model where and as it was. The error paths of a machine
without CUDA run here; the CUDA cases run where torch sees a GPU (scripts/device_check.sh runs this file there)."""

import pytest
import torch

from avasr.checkpoint import save_checkpoint
from avasr.data.dataset import collate
from avasr.data.loader import make_loader
from avasr.device import DeviceError, pick_device, pin_memory, to_device
from avasr.model import build_model
from avasr.ship.export import export_onnx
from avasr.ship.inference import AVASRInference, InferenceError
from avasr.ship.latency import torch_cpu_latency
from tests.synthetic import TINY, dataset

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="the error path of a machine without CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
CUDA_ATOL = 1e-2  # CUDA's TF32 convolutions and matmuls against the CPU's fp32, on log-probs


def test_auto_picks_cuda_exactly_when_torch_sees_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device(TINY.replace(device="auto")) == torch.device(expected)
    assert pick_device(TINY.replace(device="cpu")) == torch.device("cpu")


@NO_CUDA
def test_cuda_on_a_machine_without_it_is_refused_with_the_fix():
    message = r"device='cuda' was asked for but torch sees no CUDA device .*: pass --device cpu \(or auto\)"
    with pytest.raises(DeviceError, match=message):
        pick_device(TINY.replace(device="cuda"))
    with pytest.raises(DeviceError, match=message):  # the loader asks the same question
        make_loader(dataset(), TINY.replace(device="cuda"), shuffle=False)


def test_batches_for_the_cpu_are_neither_pinned_nor_copied():
    loader = make_loader(dataset(), TINY, shuffle=True)
    assert loader.pin_memory is False and (pin_memory("cpu"), pin_memory("cuda")) == (False, True)
    batch = next(iter(loader))
    moved = to_device(batch, torch.device("cpu"))
    assert moved.audio is batch.audio and moved.targets is batch.targets and moved.ids == batch.ids


@CUDA
def test_batches_for_cuda_are_pinned_and_every_tensor_moves():
    config = TINY.replace(device="cuda")
    loader = make_loader(dataset(), config, shuffle=True)
    batch = next(iter(loader))
    assert loader.pin_memory is True and batch.audio.is_pinned() and batch.video.is_pinned()
    moved = to_device(batch, pick_device(config))
    tensors = [v for v in moved if torch.is_tensor(v)]
    assert len(tensors) == 6 and all(t.device.type == "cuda" for t in tensors)
    assert moved.transcripts == batch.transcripts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False])
def test_export_traces_a_cpu_copy_and_leaves_the_model_as_it_was(tmp_path, device, training):
    torch.manual_seed(0)
    model = build_model(TINY).to(device).train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ran_on = []
    model.register_forward_pre_hook(lambda module, args: ran_on.append(module is model))  # copied with the model
    export_onnx(model, TINY, tmp_path / "model.onnx")
    assert ran_on and not any(ran_on)  # the exporter ran the copy (its hook fired), never the model itself
    assert model.training is training and {p.device.type for p in model.parameters()} == {device}
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("device", DEVICES)
def test_latency_times_a_cpu_copy_and_leaves_the_model_as_it_was(device):
    model = build_model(TINY).to(device).train()
    timing = torch_cpu_latency(model, TINY, runs=1, warmup=0)
    assert timing["p50_ms"] > 0
    assert model.training and {p.device.type for p in model.parameters()} == {device}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "best_model.pth"
    save_checkpoint(path, {"config": TINY.to_dict(), "model": build_model(TINY).state_dict()})
    return path


@NO_CUDA
def test_inference_on_cuda_without_a_gpu_names_the_fix(checkpoint):
    message = (
        r"best_model.pth: device='cuda' was asked for but torch sees no CUDA device .*: use device='cpu' or "
        r"'onnx' \(--device cpu\) on this machine"
    )
    with pytest.raises(InferenceError, match=message):
        AVASRInference(checkpoint, device="cuda")


@CUDA
def test_inference_on_cuda_gives_the_cpu_s_log_probs(checkpoint):
    batch = collate(dataset().utterances)
    on_cpu = AVASRInference(checkpoint, device="cpu").log_probs(batch.audio, batch.video, batch.video_lengths)
    on_cuda = AVASRInference(checkpoint, device="cuda").log_probs(batch.audio, batch.video, batch.video_lengths)
    assert on_cuda.device.type == "cpu"  # the backend hands back CPU tensors, whatever it ran on
    torch.testing.assert_close(on_cuda, on_cpu, atol=CUDA_ATOL, rtol=0)
