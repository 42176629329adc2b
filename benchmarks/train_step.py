"""Training throughput and peak memory per fusion on one fixed batch (the seed's batch 16 of 3 s clips).

Each fusion runs in its own fresh process so peak memory is its own: CPU = peak resident set size of the process
(ru_maxrss) over its baseline before the model exists; CUDA = torch.cuda.max_memory_allocated.

    python benchmarks/train_step.py [--steps 10] [--batch-size 16] [--seconds 3] [--device cpu]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from avasr.config import AUDIO_TIME_DOWNSAMPLING, FUSIONS, Config
from avasr.data.dataset import Batch
from avasr.model import build_model, count_parameters
from avasr.train import ctc_objective

TRANSCRIPT_CHARS = 30  # a GRID sentence ("bin blue at f two now") is about this long
KIB = 1024


def fixed_batch(config: Config, batch_size: int, seconds: float) -> Batch:
    g = torch.Generator().manual_seed(0)
    T = int(seconds * config.fps)
    return Batch(
        audio=torch.randn(batch_size, 1, config.n_mels, AUDIO_TIME_DOWNSAMPLING * T, generator=g),
        audio_lengths=torch.full((batch_size,), AUDIO_TIME_DOWNSAMPLING * T),
        video=torch.randn(batch_size, T, 1, config.lip_size, config.lip_size, generator=g),
        video_lengths=torch.full((batch_size,), T),
        targets=torch.randint(3, 29, (batch_size, TRANSCRIPT_CHARS), generator=g),
        target_lengths=torch.full((batch_size,), TRANSCRIPT_CHARS),
        transcripts=[""] * batch_size, ids=[str(i) for i in range(batch_size)],
    )


def measure(fusion: str, steps: int, batch_size: int, seconds: float, device: str) -> dict:
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    config = Config(fusion=fusion)
    model = build_model(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch = fixed_batch(config, batch_size, seconds).to(device)

    def step():
        loss = ctc_objective(model(batch.audio, batch.video, batch.video_lengths), batch, config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator, kernels
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak_mib = (torch.cuda.max_memory_allocated() / KIB**2 if device == "cuda"
                else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kib) / KIB)
    return {"fusion": fusion, "params": count_parameters(model), "utt_per_s": steps * batch_size / elapsed,
            "step_ms": 1000 * elapsed / steps, "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length of every utterance")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", choices=FUSIONS, help=argparse.SUPPRESS)  # internal: measure one fusion, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.batch_size, args.seconds, args.device)))
        return
    print(f"device {args.device}, batch {args.batch_size} x {args.seconds:g} s, {args.steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'fusion':<10} {'params':>10} {'utt/s':>8} {'step ms':>9} {'peak MiB':>9}")
    rows = []
    for fusion in FUSIONS:
        out = subprocess.run([sys.executable, __file__, "--one", fusion, "--steps", str(args.steps),
                              "--batch-size", str(args.batch_size), "--seconds", str(args.seconds),
                              "--device", args.device], check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['fusion']:<10} {r['params']:>10,} {r['utt_per_s']:>8.1f} {r['step_ms']:>9.1f} {r['peak_mib']:>9.1f}")
    fastest = max(rows, key=lambda r: r["utt_per_s"])
    for r in rows:
        print(f"  {r['fusion']}: {fastest['utt_per_s'] / r['utt_per_s']:.2f}x the time of {fastest['fusion']}")


if __name__ == "__main__":
    main()
