"""Training throughput and peak memory per fusion on one fixed batch (the original's batch 16 of 3 s clips), in fp32
and in bf16 autocast (Config.precision), with the conv weights channels-last (the model's layout) and, in fp32, NCHW
(the layout before); the CPU's model and the flags that decide bf16's gain (avx512_bf16, amx_bf16) are printed
first, and on CUDA the GPU. With --corpus, where an epoch's time goes and how fast each recipe learns: the smoke
space's earlier recipe against its current one.

Fixed batch: each fusion runs in its own fresh process so peak memory is its own: CPU = peak resident set size of
the process (ru_maxrss) over its baseline before the model exists; CUDA = torch.cuda.max_memory_allocated.

Corpus (one torch thread, as in a sweep trial on a 2-core machine): for each recipe and fusion, `avasr.train.fit`
on the corpus's train/val split, its per-epoch stage times (waiting for batches, forward+backward+step, validation,
checkpoints: metrics.csv), what logging each epoch to MLflow costs (a sqlite store, as the sweep's workers do), the
first epoch with val WER <= 0.5, the best val WER and the best checkpoint's test WER (unseen speakers). Recipes:
"before" is the smoke space as it was (constant LR 2e-3, the middle of its old range, halved on plateaus);
"after" is tune_spaces/smoke.py now. Ray's own per-trial cost is benchmarks/sweep_overhead.py's.

    python benchmarks/train_step.py [--model original|smoke] [--steps 10] [--batch-size 16] [--seconds 3] [--device cpu]
    python benchmarks/train_step.py --device cuda --precisions fp32 bf16 --layouts channels_last
    python benchmarks/train_step.py --corpus data/corpus/medium [--fusions simple attention] [--epochs 12]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from avasr.checkpoint import BEST_CHECKPOINT
from avasr.config import AUDIO_TIME_DOWNSAMPLING, AUDIO_VISUAL, FUSIONS, PRECISIONS, Config
from avasr.data.dataset import Batch
from avasr.device import autocast
from avasr.evaluation import evaluate_checkpoint
from avasr.model import build_model, count_parameters
from avasr.objective import ctc_objective
from avasr.sweep import tracking
from avasr.sweep.spaces import fixed_values, load_space
from avasr.train import METRICS_FILE, fit, load_datasets

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
        transcripts=[""] * batch_size,
        ids=[str(i) for i in range(batch_size)],
        speakers=[""] * batch_size,
        streams=[AUDIO_VISUAL] * batch_size,
        speech=[],
    )


MODEL_FIELDS = ("lip_size", "encoder_channels", "feature_dim", "temporal_layers")  # what --model smoke takes
# conv weight layouts compared: the model's own (channels-last) first, then NCHW (the layout the model used before)
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
CPU_FLAGS = ("avx2", "avx512", "avx_vnni", "amx")  # prefixes of the /proc/cpuinfo flags printed: bf16 and int8 speed


def cpu_line() -> str:
    """The CPU's model and its vector/matrix flags from /proc/cpuinfo (Linux), e.g. `AMD EPYC: avx2 avx512_bf16`."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU: unknown (no /proc/cpuinfo)"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = [f for f in fields.get("flags", "").split() if f.startswith(CPU_FLAGS)]
    return f"CPU {fields.get('model name', '?')}: {' '.join(flags) or 'none of avx2, avx512, amx'}"


def gpu_line() -> str:
    """The GPU, its compute capability (bf16 needs 8.0) and whether fp32 convolutions/matmuls run as TF32."""
    name, (major, minor) = torch.cuda.get_device_name(), torch.cuda.get_device_capability()
    tf32 = f"TF32 convolutions {torch.backends.cudnn.allow_tf32}, matmuls {torch.backends.cuda.matmul.allow_tf32}"
    return f"GPU {name}, compute capability {major}.{minor}, bf16 {torch.cuda.is_bf16_supported()}; {tf32}"


def combinations(layouts: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """(layout, precision) pairs measured per fusion: every precision in the model's layout (the first), NCHW in
    fp32 only (the layout comparison is fp32's)."""
    pairs = [(layouts[0], p) for p in precisions]
    return pairs + [(layout, "fp32") for layout in layouts[1:] if "fp32" in precisions]


def model_config(fusion: str, model: str) -> Config:
    """The original-size model, or the smoke sweep's small one."""
    if model == "original":
        return Config(fusion=fusion)
    smoke = fixed_values(load_space("smoke").space)
    return Config.from_dict({k: smoke[k] for k in MODEL_FIELDS} | {"fusion": fusion})


def measure(
    fusion: str,
    steps: int,
    batch_size: int,
    seconds: float,
    device: str,
    model_name: str = "original",
    layout: str = "channels_last",
    precision: str = "fp32",
) -> dict:
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    config = model_config(fusion, model_name)
    model = build_model(config).to(device).train()
    for encoder in (model.audio_encoder, model.video_encoder):  # the model keeps channels-last; "before" is NCHW
        encoder.convs.to(memory_format=LAYOUTS[layout])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch = fixed_batch(config, batch_size, seconds).to(device)

    def step():  # as avasr.train's: the forward pass under autocast, backward and the optimizer outside
        with autocast(torch.device(device), precision):
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
    peak_mib = (
        torch.cuda.max_memory_allocated() / KIB**2
        if device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kib) / KIB
    )
    return {
        "fusion": fusion,
        "layout": layout,
        "precision": precision,
        "params": count_parameters(model),
        "utt_per_s": steps * batch_size / elapsed,
        "step_ms": 1000 * elapsed / steps,
        "peak_mib": peak_mib,
    }


# --- recipes on a corpus ----------------------------------------------------------------------------------------
BEFORE = {
    "fusion": "simple",
    "dropout": 0.1,
    "lr": 2e-3,
    "batch_size": 8,
    "lip_size": 32,
    "encoder_channels": [8, 16, 32],
    "feature_dim": 128,
    "temporal_layers": 2,
}  # the smoke space's earlier recipe: a constant LR, halved on plateaus
STAGES = ("data_s", "step_s", "eval_s", "save_s")
WER_GOAL = 0.5


def recipes(epochs: int) -> dict[str, dict]:
    after = fixed_values(load_space("smoke").space)
    return {
        "before": {**BEFORE, "epochs": epochs, "patience": epochs},
        "after": {**after, "epochs": epochs, "patience": epochs},
    }


def run_recipe(name: str, fields: dict, fusion: str, corpus: Path, out: Path) -> dict:
    config = Config.from_dict(
        {
            **fields,
            "fusion": fusion,
            "train_manifest": str(corpus / "train_manifest.txt"),
            "val_manifest": str(corpus / "val_manifest.txt"),
            "device": "cpu",
            "output_dir": str(out / f"{name}-{fusion}"),
        }
    )
    started = time.perf_counter()
    fit(config, datasets=load_datasets(config))
    seconds = time.perf_counter() - started
    rows = tracking.read_metrics_csv(Path(config.output_dir) / METRICS_FILE)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment(f"{name}-{fusion}-{time.time()}")).info.run_id
    logged = time.perf_counter()
    for row in rows:
        tracking.log_epoch(client, run_id, row)
    test = evaluate_checkpoint(Path(config.output_dir) / BEST_CHECKPOINT, corpus / "test_manifest.txt")
    reached = next((int(r["epoch"]) for r in rows if r["val_wer"] <= WER_GOAL), None)
    return {
        "recipe": name,
        "fusion": fusion,
        "epochs": len(rows),
        "seconds": seconds,
        "epoch_s": sum(r["seconds"] for r in rows) / len(rows),
        **{k: sum(r[k] for r in rows) / len(rows) for k in STAGES},
        "mlflow_s": (time.perf_counter() - logged) / len(rows),
        "reached": reached,
        "best_val_wer": min(r["val_wer"] for r in rows),
        "test_wer": test["wer"],
    }


def compare_recipes(corpus: Path, fusions: list[str], epochs: int, out: Path) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True)
    print(f"corpus {corpus}, {epochs} epochs, 1 torch thread; WER goal {WER_GOAL}")
    print(
        f"{'recipe':<7} {'fusion':<10} {'s/epoch':>7} {'data':>6} {'step':>6} {'eval':>6} {'ckpt':>6} {'mlflow':>6} "
        f"{'WER<=.5 at':>10} {'best val WER':>12} {'test WER':>8} {'total s':>7}"
    )
    results = []
    for name, fields in recipes(epochs).items():
        for fusion in fusions:
            r = run_recipe(name, fields, fusion, corpus, out)
            results.append(r)
            share = {k: r[k] / r["epoch_s"] for k in STAGES}
            print(
                f"{name:<7} {fusion:<10} {r['epoch_s']:>7.2f} {share['data_s']:>6.1%} {share['step_s']:>6.1%} "
                f"{share['eval_s']:>6.1%} {share['save_s']:>6.1%} {r['mlflow_s'] / r['epoch_s']:>6.1%} "
                f"{r['reached'] or 'never':>10} {r['best_val_wer']:>12.3f} {r['test_wer']:>8.3f} "
                f"{r['seconds']:>7.0f}",
                flush=True,
            )
    for fusion in fusions:
        before, after = (
            next(r for r in results if r["recipe"] == n and r["fusion"] == fusion) for n in ("before", "after")
        )
        print(
            f"  {fusion}: best val WER {before['best_val_wer']:.3f} -> {after['best_val_wer']:.3f}, test WER "
            f"{before['test_wer']:.3f} -> {after['test_wer']:.3f}, s/epoch x{after['epoch_s'] / before['epoch_s']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, help="compare the recipes on this corpus (its three manifests)")
    parser.add_argument("--fusions", nargs="+", choices=FUSIONS, default=list(FUSIONS))
    parser.add_argument("--epochs", type=int, help="default: the smoke space's")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/train_step"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length of every utterance")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--model",
        choices=("original", "smoke"),
        default="original",
        help="the original-size model or the smoke sweep's small one",
    )
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), help="fp32 and/or bf16 autocast"
    )
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=LAYOUTS,
        default=list(LAYOUTS),
        help="conv weight layouts; the first is measured in every precision, the others in fp32",
    )
    parser.add_argument("--one", choices=FUSIONS, help=argparse.SUPPRESS)  # internal: measure one fusion, print JSON
    parser.add_argument("--layout", choices=LAYOUTS, default="channels_last", help=argparse.SUPPRESS)  # with --one
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=argparse.SUPPRESS)  # with --one
    args = parser.parse_args()
    if args.corpus:
        epochs = args.epochs or fixed_values(load_space("smoke").space)["epochs"]
        compare_recipes(args.corpus, args.fusions, epochs, args.out / time.strftime("%Y%m%d-%H%M%S"))
        return
    if args.one:
        r = measure(
            args.one, args.steps, args.batch_size, args.seconds, args.device, args.model, args.layout, args.precision
        )
        print(json.dumps(r))
        return
    print(cpu_line())
    if args.device == "cuda":
        print(gpu_line())
    print(
        f"{args.model} model, device {args.device}, batch {args.batch_size} x {args.seconds:g} s, {args.steps} "
        f"steps, torch threads {torch.get_num_threads()}; one process per measurement"
    )
    print(f"{'fusion':<10} {'layout':<14} {'precision':<9} {'params':>10} {'utt/s':>8} {'step ms':>9} {'peak MiB':>9}")
    rows = []
    for fusion in args.fusions:
        for layout, precision in combinations(args.layouts, args.precisions):
            r = measure_in_process(args, fusion, layout, precision)
            rows.append(r)
            print(
                f"{fusion:<10} {layout:<14} {precision:<9} {r['params']:>10,} {r['utt_per_s']:>8.1f} "
                f"{r['step_ms']:>9.1f} {r['peak_mib']:>9.1f}",
                flush=True,
            )
    summarise(rows, args.layouts)


def measure_in_process(args: argparse.Namespace, fusion: str, layout: str, precision: str) -> dict:
    """One measurement in a fresh process of its own: its peak memory is its own."""
    flags = {"--steps": args.steps, "--batch-size": args.batch_size, "--seconds": args.seconds}
    flags |= {"--device": args.device, "--model": args.model, "--layout": layout, "--precision": precision}
    command = [sys.executable, __file__, "--one", fusion, *(str(x) for item in flags.items() for x in item)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def summarise(rows: list[dict], layouts: list[str]) -> None:
    """Per fusion: its time against the fastest fusion's, bf16 against fp32, the model's layout against the others."""
    by = {(r["fusion"], r["layout"], r["precision"]): r for r in rows}
    ours = [r for r in rows if r["layout"] == layouts[0] and r["precision"] == "fp32"] or rows
    fastest = max(ours, key=lambda r: r["utt_per_s"])
    for r in ours:
        parts = [f"{fastest['utt_per_s'] / r['utt_per_s']:.2f}x the time of {fastest['fusion']}"]
        bf16 = by.get((r["fusion"], layouts[0], "bf16"))
        if bf16 and r["precision"] == "fp32":
            parts.append(f"bf16 {r['step_ms'] / bf16['step_ms']:.2f}x as fast as fp32")
        for layout in layouts[1:]:
            other = by.get((r["fusion"], layout, "fp32"))
            if other:
                parts.append(f"{layouts[0]} {other['step_ms'] / r['step_ms']:.2f}x as fast as {layout}")
        print(f"  {r['fusion']}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
