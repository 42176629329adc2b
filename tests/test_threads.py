"""One thread by default (README, "Shipping"): the engine's PyTorch and OpenCV work and its onnxruntime session run
on one thread unless `threads` says otherwise, and the process's own settings come back afterwards."""

import cv2
import pytest
import torch

from avasr.checkpoint import BEST_CHECKPOINT, load_model
from avasr.data.lips import HaarLipCropper
from avasr.ship.export import export_onnx
from avasr.ship.inference import AVASRInference
from avasr.train import fit
from tests.media import write_clip
from tests.synthetic import TINY, dataset


class RecordingCropper(HaarLipCropper):
    """The default cropper, noting the thread counts it runs under."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def crop(self, frames, size, where):
        self.seen.append((torch.get_num_threads(), cv2.getNumThreads()))
        return super().crop(frames, size, where)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = dataset()
    folder = tmp_path_factory.mktemp("threads")
    fit(TINY.replace(epochs=1, output_dir=str(folder)), datasets=(data, data))
    return folder / BEST_CHECKPOINT


@pytest.fixture
def process_threads():
    """Two threads for torch and OpenCV while the test runs, as a process might have set them."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    yield 2
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


def test_the_engine_transcribes_on_one_thread_and_gives_the_process_its_own_back(checkpoint, tmp_path, process_threads):
    clip = write_clip(tmp_path, "u0", 1.0)
    cropper = RecordingCropper()
    engine = AVASRInference(checkpoint, cropper=cropper)
    model_threads = []
    backend_log_probs = engine.backend.log_probs

    def recorded(*inputs):
        model_threads.append(torch.get_num_threads())
        return backend_log_probs(*inputs)

    engine.backend.log_probs = recorded
    engine.transcribe(*clip)
    assert cropper.seen == [(1, 1)] and model_threads == [1]
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (process_threads, process_threads)


@pytest.mark.slow
def test_an_onnx_session_gets_one_thread_unless_told_otherwise(checkpoint, tmp_path):
    model, config = load_model(checkpoint)
    path = export_onnx(model, config, tmp_path / "model.onnx")
    for options, threads in (({}, 1), ({"threads": 2}, 2)):
        session = AVASRInference(path, **options).backend.session.get_session_options()
        assert (session.intra_op_num_threads, session.inter_op_num_threads) == (threads, threads)
