"""CPU inference latency on the original's 5 s input: audio (B, 1, 40, 500), video (B, 125, 1, 64, 64); B = 1 by
default.

Threads: one (onnxruntime: intra_op_num_threads = inter_op_num_threads = 1; PyTorch: torch.set_num_threads(1);
eager PyTorch runs its ops one after another anyway). On a shared machine (the
sweep runs trials side by side on a few cores) a multi-threaded session competes with its neighbours and its
spinning worker threads turn every run's latency into a measure of the machine's load; one thread gives numbers
that are stable, comparable between trials and fusions, and what one core of a small CPU delivers to a single
stream. Pass `threads` to measure other settings.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avasr.config import Config
from avasr.ship.export import cpu_copy, cpu_session, example_inputs, read_config, run_session

ORIGINAL_SECONDS = 5.0  # the original design's input length
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5  # first runs allocate buffers and pick kernels
DEFAULT_ROUNDS = 10  # interleaved measurements: every model timed in each of this many rounds
DEFAULT_THREADS = 1  # see the module docstring
BATCH = 1
P50, P95 = 50, 95
MS_PER_NS = 1e-6
MS_PER_S = 1e3
GIGA = 1e9
MATMUL_SIZE = 1024  # large enough for BLAS to reach its peak, small enough to time in milliseconds
MATMUL_RUNS = 20


def input_frames(seconds: float, config: Config) -> int:
    """Video frames in `seconds` (125 for 5 s at 25 fps); the audio has 4 times more (AUDIO_TIME_DOWNSAMPLING)."""
    return round(seconds * config.fps)


def time_calls(call: Callable[[], object], runs: int, warmup: int) -> dict[str, float]:
    """Milliseconds per call: {"p50_ms", "p95_ms", "mean_ms"} over `runs` calls after `warmup` untimed ones."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        call()
    return summary([timed(call) for _ in range(runs)])


def timed(call: Callable[[], object]) -> float:
    """One call's wall time in milliseconds."""
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) * MS_PER_NS


def summary(times_ms: Sequence[float]) -> dict[str, float]:
    """{"p50_ms", "p95_ms", "mean_ms"} of call times in milliseconds."""
    times = np.asarray(times_ms)
    return {
        "p50_ms": float(np.percentile(times, P50)),
        "p95_ms": float(np.percentile(times, P95)),
        "mean_ms": float(times.mean()),
    }


def turns(names: Sequence[str], runs: int, rounds: int) -> list[tuple[str, int]]:
    """The order of an interleaved measurement: `rounds` rounds, each timing every name for its share of `runs`
    calls (the first `runs % rounds` rounds one more), the order rotated by one each round so that no name always
    follows the same neighbour. -> [(name, calls), ...]"""
    if runs < 1 or not 1 <= rounds <= runs:
        raise ValueError(f"need runs >= 1 and 1 <= rounds <= runs, got runs={runs}, rounds={rounds}")
    order = list(names)
    schedule = []
    for r in range(rounds):
        calls = runs // rounds + (r < runs % rounds)
        rotated = order[r % len(order) :] + order[: r % len(order)] if order else []
        schedule += [(name, calls) for name in rotated]
    return schedule


def time_interleaved(
    calls: Mapping[str, Callable[[], object]], runs: int, warmup: int, rounds: int = DEFAULT_ROUNDS
) -> dict[str, dict[str, float]]:
    """time_calls for several calls at once, in turns (see `turns`): a load that comes and goes while they are
    measured (a neighbour's job, a CPU that throttles) falls on every one of them alike, instead of on whichever
    was being timed then. -> {name: {"p50_ms", "p95_ms", "mean_ms"}}, each over `runs` calls."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for name, count in turns(list(calls), runs, min(rounds, runs)):
        times[name] += [timed(calls[name]) for _ in range(count)]
    return {name: summary(t) for name, t in times.items()}


def onnx_cpu_latency(
    onnx_path: str | Path,
    seconds: float = ORIGINAL_SECONDS,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
    batch: int = BATCH,
) -> dict[str, float]:
    """onnxruntime CPU latency of a file written by avasr.ship.export (fp32 or int8), `batch` x `seconds` of input.

    intra_op_num_threads = inter_op_num_threads = `threads` (1 by default: see the module docstring).
    Returns {"p50_ms", "p95_ms", "mean_ms"}.
    """
    return time_calls(onnx_call(onnx_path, seconds, threads, batch), runs, warmup)


def onnx_call(onnx_path: str | Path, seconds: float, threads: int, batch: int) -> Callable[[], object]:
    """One inference of `batch` x `seconds` of input in a CPU session of the file, ready to time."""
    config = read_config(onnx_path)
    session = cpu_session(Path(onnx_path), threads)
    frames = input_frames(seconds, config)
    audio, video, lengths = example_inputs(config, batch, frames, generator=torch.Generator().manual_seed(0))
    lengths[:] = frames  # every utterance full length: the batch does `batch` x the work
    return functools.partial(run_session, session, audio, video, lengths)


def onnx_cpu_latencies(
    onnx_paths: Mapping[str, str | Path],
    seconds: float = ORIGINAL_SECONDS,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
    rounds: int = DEFAULT_ROUNDS,
) -> dict[str, dict[str, float]]:
    """onnx_cpu_latency of several files (batch 1), measured in turns (time_interleaved): the latencies a sweep
    compares configurations by. -> {name: {"p50_ms", "p95_ms", "mean_ms"}}."""
    calls = {name: onnx_call(path, seconds, threads, BATCH) for name, path in onnx_paths.items()}
    return time_interleaved(calls, runs, warmup, rounds)


def torch_cpu_latency(
    model: nn.Module,
    config: Config = Config(),
    seconds: float = ORIGINAL_SECONDS,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = DEFAULT_THREADS,
    batch: int = BATCH,
) -> dict[str, float]:
    """Eager PyTorch CPU latency for comparison with onnx_cpu_latency: same input, same thread count.

    Runs on a CPU copy of `model` in eval mode under inference_mode; torch's thread count is restored afterwards.
    Returns {"p50_ms", "p95_ms", "mean_ms"}.
    """
    frames = input_frames(seconds, config)
    audio, video, lengths = example_inputs(config, batch, frames, generator=torch.Generator().manual_seed(0))
    lengths[:] = frames
    model = cpu_copy(model)  # the caller's model keeps its device (a GPU's weights would time the GPU) and mode
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return time_calls(lambda: model(audio, video, lengths), runs, warmup)
    finally:
        torch.set_num_threads(previous)


# --- the compute-bound time: how fast the model could run if it were all matrix multiplication -----------------


def model_flops(
    model: nn.Module, config: Config = Config(), seconds: float = ORIGINAL_SECONDS, batch: int = BATCH
) -> int:
    """Floating-point operations of one forward pass (a multiply-add counts 2), by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    frames = input_frames(seconds, config)
    audio, video, lengths = example_inputs(config, batch, frames, generator=torch.Generator().manual_seed(0))
    lengths[:] = frames
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        cpu_copy(model)(audio, video, lengths)
    return counter.get_total_flops()


def matmul_gflops(threads: int = DEFAULT_THREADS, size: int = MATMUL_SIZE, runs: int = MATMUL_RUNS) -> float:
    """This machine's fp32 matrix-multiply throughput in GFLOP/s with `threads` torch threads (median of runs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timing = time_calls(lambda: torch.mm(a, b), runs, warmup=DEFAULT_WARMUP)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / (timing["p50_ms"] / MS_PER_S) / GIGA
