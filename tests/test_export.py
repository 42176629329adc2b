import math
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from avasr.config import FUSIONS, Config
from avasr.data.dataset import collate
from avasr.decode import greedy_decode
from avasr.model import build_model, count_parameters
from avasr.objective import ctc_objective
from avasr.ship.export import (
    INPUT_DOCS,
    PARITY_ATOL,
    ParityError,
    check_parity,
    example_inputs,
    export_onnx,
    read_config,
)
from avasr.ship.latency import (
    onnx_cpu_latencies,
    onnx_cpu_latency,
    time_calls,
    time_interleaved,
    torch_cpu_latency,
    turns,
)
from tests.synthetic import TINY, dataset

# Default 64x64 lips and 40 mels with narrow layers: exports in seconds, exercises the real graph.
SMALL = Config(encoder_channels=(4, 8, 8), feature_dim=32, temporal_layers=2)
TRAIN_STEPS = 60  # full-batch Adam steps on the 8 synthetic utterances: enough for peaked, mostly right output
TRAIN_LR = 1e-2
LATENCY_RUNS = 10  # timings belong to benchmarks; here only their sanity is checked


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """fusion -> (model, config, path), each fusion exported once per module."""
    cache = {}

    def export(fusion: str):
        if fusion not in cache:
            torch.manual_seed(0)
            config = SMALL.replace(fusion=fusion)
            model = build_model(config).train()  # export must switch to eval and back
            path = export_onnx(model, config, tmp_path_factory.mktemp(fusion) / "model.onnx")
            assert model.training
            cache[fusion] = (model, config, path)
        return cache[fusion]

    return export


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained until its output is peaked, exported; with the batch it learned."""
    torch.manual_seed(0)
    batch = collate(dataset().utterances)
    model = build_model(TINY).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    for _ in range(TRAIN_STEPS):
        loss = ctc_objective(model(batch.audio, batch.video, batch.video_lengths), batch, 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        texts = greedy_decode(model(batch.audio, batch.video, batch.video_lengths), batch.video_lengths)
    path = export_onnx(model, TINY, tmp_path_factory.mktemp("trained") / "model.onnx")
    return model, batch, texts, path


@pytest.mark.slow
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_exports_with_dynamic_batch_and_length_and_matches_pytorch(small_export, fusion):
    model, config, path = small_export(fusion)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == ["audio_features", "video_features", "lengths"]  # the original design's names
    assert [o.name for o in session.get_outputs()] == ["log_probs"]
    batch, frames = inputs["video_features"][:2]
    assert isinstance(batch, str) and isinstance(frames, str)  # symbolic, not the example's 2 and 7
    assert inputs["audio_features"][:3] == [batch, 1, 40] and isinstance(inputs["audio_features"][3], str)
    assert inputs["video_features"][2:] == [1, 64, 64] and inputs["lengths"] == [batch]
    assert read_config(path) == config.inference

    report = check_parity(model, path)
    print(report.summary())
    assert [(c.batch, c.frames) for c in report.cases] == [(1, 50), (3, 50), (1, 125), (3, 125), (1, 200), (3, 200)]
    assert report.max_abs_diff <= PARITY_ATOL and report.texts_equal


def test_the_original_two_input_feed_is_told_to_pass_lengths(small_export):
    """The original's snippet feeds audio_features and video_features only: onnxruntime names the missing input, and
    the graph's own doc string says what to pass."""
    _, config, path = small_export("adaptive")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    audio, video, _ = example_inputs(config, 1, 50)
    with pytest.raises(ValueError, match="lengths"):  # onnxruntime names the input the feed lacks
        session.run(None, {"audio_features": audio.numpy(), "video_features": video.numpy()})
    docs = {i.name: i.doc_string for i in onnx.load_model(str(path)).graph.input}
    assert docs == INPUT_DOCS and "pass [T]" in docs["lengths"]
    lengths = np.array([50], dtype=np.int64)
    out = session.run(None, {"audio_features": audio.numpy(), "video_features": video.numpy(), "lengths": lengths})
    assert out[0].shape == (1, 50, 29)


def test_parity_error_carries_the_numbers_when_pytorch_and_onnx_disagree(small_export):
    model, _, path = small_export("adaptive")
    drifted = build_model(SMALL)
    drifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        drifted.ctc_head.bias[3] += 1e-3  # log p_3 moves by 1e-3 * (1 - p_3), p_3 ~ 1/29
    with pytest.raises(ParityError, match=r"max \|diff\| 0\.0009\d* \(tolerance 0\.0001\)") as caught:
        check_parity(drifted, path, frames=(50,), batches=(1,))
    assert 0.9e-3 < caught.value.report.max_abs_diff < 1e-3


@pytest.mark.slow
def test_trained_model_transcribes_the_same_text_in_onnxruntime(trained):
    model, batch, texts, path = trained
    print("trained texts:", texts)
    assert all(texts)  # peaked output: equality of empty strings would prove nothing
    report = check_parity(model, path, inputs=[(batch.audio, batch.video, batch.video_lengths)])
    assert report.cases[-1].onnx_texts == tuple(texts)


@pytest.mark.slow
def test_full_size_default_model_exports_within_parity_and_its_cpu_latency_is_measured(tmp_path):
    config = Config()
    torch.manual_seed(0)
    model = build_model(config).eval()
    path = export_onnx(model, config, tmp_path / "default.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default.onnx"]  # weights inside, no .data file
    assert path.stat().st_size > 4 * count_parameters(model)  # float32 weights
    report = check_parity(model, path)  # README: log-probs within 1e-4 and the same text at the default size too
    print(report.summary())
    assert PARITY_ATOL == 1e-4 and report.max_abs_diff <= PARITY_ATOL and report.texts_equal

    onnx_ms = onnx_cpu_latency(path, runs=LATENCY_RUNS, warmup=2)
    torch_ms = torch_cpu_latency(model, config, runs=LATENCY_RUNS, warmup=2)
    print(f"default model ({config.fusion}), 5 s input, 1 thread: onnxruntime {onnx_ms}, pytorch {torch_ms}")
    for timing in (onnx_ms, torch_ms):
        assert set(timing) == {"p50_ms", "p95_ms", "mean_ms"}
        assert all(math.isfinite(v) and v > 0 for v in timing.values())
        assert timing["p50_ms"] <= timing["p95_ms"]


def test_interleaved_turns_give_every_name_its_runs_in_rotated_order():
    assert turns(["a", "b", "c"], runs=7, rounds=3) == [
        ("a", 3), ("b", 3), ("c", 3),
        ("b", 2), ("c", 2), ("a", 2),
        ("c", 2), ("a", 2), ("b", 2),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="1 <= rounds <= runs"):
        turns(["a"], runs=2, rounds=3)


def test_interleaved_timing_alternates_the_calls_it_measures():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    timings = time_interleaved(calls, runs=4, warmup=1, rounds=2)
    assert order == ["a", "b"] + ["a", "a", "b", "b", "b", "b", "a", "a"]  # warm-up, then two rotated rounds
    assert set(timings) == {"a", "b"} and all(t["p50_ms"] >= 0 for t in timings.values())


def test_onnx_latencies_of_several_files_in_turns(small_export):
    paths = {fusion: small_export(fusion)[2] for fusion in ("simple", "attention")}
    timings = onnx_cpu_latencies(paths, runs=4, warmup=1, rounds=2)
    assert set(timings) == set(paths)
    assert all(0 < t["p50_ms"] <= t["p95_ms"] for t in timings.values())


def test_time_calls_reports_milliseconds():
    timing = time_calls(lambda: time.sleep(0.002), runs=5, warmup=1)
    assert 2.0 <= timing["p50_ms"] <= timing["p95_ms"]
    with pytest.raises(ValueError, match="runs must be >= 1"):
        time_calls(lambda: None, runs=0, warmup=0)


def test_a_lip_motion_model_exports_within_parity_and_keeps_its_switch(tmp_path):
    torch.manual_seed(0)
    config = SMALL.replace(fusion="weighted", lip_motion=True)
    model = build_model(config)
    path = export_onnx(model, config, tmp_path / "model.onnx")
    assert read_config(path).lip_motion is True  # inference rebuilds the same input from the file's metadata
    report = check_parity(model, path)
    assert report.max_abs_diff <= PARITY_ATOL and report.texts_equal
