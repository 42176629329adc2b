"""Deployment latency beside the original design's table: the model alone (PyTorch eager, ONNX fp32, ONNX int8 static
and dynamic; batch 1 and 4 of the original's 5 s input; 1 and 2 threads), its FLOPs against this machine's fp32 matmul
throughput, and a 5 s clip end to end through `AVASRInference.transcribe` (files on disk -> text) by stage.

    python benchmarks/latency.py --clip-manifest data/corpus/medium/test_manifest.txt   # default-size model, random
    python benchmarks/latency.py --clip-manifest data/corpus/medium/test_manifest.txt \
        --checkpoint outputs/sweeps/NAME/.../best_model.pth   # a trained one: adds WER/CER of fp32 and int8 on its
        # test split (unseen speakers), int8 calibrated on its training utterances

The end-to-end clip is the first utterance of --clip-manifest, looped to 5 s.

compute-bound = FLOPs / (measured fp32 matmul GFLOP/s at that thread count): the time the model would take if all
of it ran at BLAS speed. Every number is measured in this one run; the machine's load shows in p95. int8's gain
depends on the CPU (VNNI, AMX): compare ratios only between runs on the same machine.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from avasr.checkpoint import load_model
from avasr.config import Config
from avasr.corpus.synth import FPS, write_video
from avasr.data.audio import read_waveform
from avasr.data.manifest import read_manifest
from avasr.data.video import read_gray_frames
from avasr.evaluation import decoding_for, evaluate_decoding
from avasr.model import build_model, count_parameters
from avasr.ship.export import example_inputs, export_onnx, session_feeds
from avasr.ship.inference import STAGES, AVASRInference, corpus_scores
from avasr.ship.latency import (
    GIGA,
    MS_PER_S,
    ORIGINAL_SECONDS,
    input_frames,
    matmul_gflops,
    model_flops,
    onnx_cpu_latency,
    torch_cpu_latency,
)
from avasr.ship.quantize import QUANTIZATIONS, calibration_feeds, quantize

ORIGINAL_CPU = {1: (45.0, 55.0), 4: (120.0, 150.0)}  # the original's table: batch -> (mean ms, p95 ms)
BATCHES = (1, 4)
THREADS = (1, 2)
DEFAULT_CORPUS = Path("data/corpus/medium")
CALIBRATION_RANDOM = 16  # random calibration feeds when there is no training data (timing only)


def five_second_clip(manifest: Path, folder: Path) -> tuple[Path, Path]:
    """The manifest's first clip looped to the original's 5 s (audio and video alike), written as WAV + mp4v."""
    entry = read_manifest(manifest)[0]
    waveform, rate = read_waveform(entry.audio_path)
    frames, _ = read_gray_frames(entry.video_path)
    count = round(ORIGINAL_SECONDS * FPS)
    video = np.resize(frames, (count, *frames.shape[1:]))  # repeats the clip
    audio = np.resize(waveform, round(ORIGINAL_SECONDS * rate))
    audio_path, video_path = folder / "clip5s.wav", folder / "clip5s.mp4"
    sf.write(audio_path, audio, rate)
    write_video(video_path, np.repeat(video[..., None], 3, axis=-1))  # the corpus's own writer (BGR)
    return audio_path, video_path


def model_rows(model, config, paths: dict[str, Path], runs: int, warmup: int, bound_ms) -> list[dict]:
    rows = []
    for batch in BATCHES:
        for threads in THREADS:
            timings = {
                "pytorch eager": torch_cpu_latency(
                    model, config, runs=runs, warmup=warmup, threads=threads, batch=batch
                )
            }
            for name, path in paths.items():
                timings[name] = onnx_cpu_latency(path, runs=runs, warmup=warmup, threads=threads, batch=batch)
            for name, timing in timings.items():
                rows.append(
                    {
                        "backend": name,
                        "batch": batch,
                        "threads": threads,
                        **timing,
                        "bound_ms": bound_ms[(batch, threads)],
                    }
                )
    return rows


def print_model_table(rows: list[dict]) -> None:
    print(
        f"\n{'backend':<22}{'batch':>6}{'thr':>5}{'mean':>9}{'p50':>9}{'p95':>9}{'bound':>9}{'p50/bound':>11}"
        f"{'original mean/p95':>20}"
    )
    for r in rows:
        original = ORIGINAL_CPU.get(r["batch"])
        shown = f"{original[0]:.0f} / {original[1]:.0f}" if original else ""
        print(
            f"{r['backend']:<22}{r['batch']:>6}{r['threads']:>5}{r['mean_ms']:>9.1f}{r['p50_ms']:>9.1f}"
            f"{r['p95_ms']:>9.1f}{r['bound_ms']:>9.1f}{r['p50_ms'] / r['bound_ms']:>11.2f}{shown:>20}"
        )


def p50(rows, backend: str, batch: int = 1, threads: int = 1) -> float:
    return next(r["p50_ms"] for r in rows if (r["backend"], r["batch"], r["threads"]) == (backend, batch, threads))


def end_to_end(model_path: Path, clip: tuple[Path, Path], runs: int) -> dict:
    engine = AVASRInference(model_path, device="onnx", threads=1)
    for _ in range(2):
        engine.transcribe(*clip)  # warm-up: session buffers, the cascade, the mel filterbank
    results = [engine.transcribe(*clip) for _ in range(runs)]
    return {
        "latency_ms": statistics.median(r["latency_ms"] for r in results),
        **{stage: statistics.median(r["timings"][stage] for r in results) for stage in STAGES},
    }


def split_scores(paths: dict[str, Path], manifest: Path) -> dict[str, dict]:
    return {
        name: corpus_scores(list(AVASRInference(path, threads=1).transcribe_manifest(manifest)))
        for name, path in paths.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a trained best_model.pth (default: the default-size model, random)")
    parser.add_argument(
        "--test-manifest",
        help="unseen-speaker split for WER/CER (default: the checkpoint's corpus's test_manifest.txt)",
    )
    parser.add_argument(
        "--clip-manifest",
        default=str(DEFAULT_CORPUS / "test_manifest.txt"),
        help="its first clip, looped to 5 s, is the end-to-end input",
    )
    parser.add_argument("--runs", type=int, default=100, help="timed calls per setting (after --warmup)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--e2e-runs", type=int, default=20)
    args = parser.parse_args()

    torch.manual_seed(0)
    model, config = load_model(args.checkpoint) if args.checkpoint else (build_model(Config()).eval(), Config())
    flops = model_flops(model, config)
    gflops = {threads: matmul_gflops(threads) for threads in THREADS}
    bound_ms = {(b, t): b * flops / (gflops[t] * GIGA) * MS_PER_S for b in BATCHES for t in THREADS}
    print(
        f"model: fusion={config.fusion}, {count_parameters(model) / 1e6:.2f}M parameters, "
        f"{flops / GIGA:.2f} GFLOP per 5 s utterance"
    )
    print("fp32 matmul: " + ", ".join(f"{g:.0f} GFLOP/s on {t} thread(s)" for t, g in gflops.items()))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = export_onnx(model, config, tmp / "fp32.onnx")
        if args.checkpoint and config.train_manifest:
            feeds = calibration_feeds(config.train_manifest, config)
        else:
            g = torch.Generator().manual_seed(0)
            feeds = [
                session_feeds(*example_inputs(config, 1, input_frames(ORIGINAL_SECONDS, config), generator=g))
                for _ in range(CALIBRATION_RANDOM)
            ]
        paths = {
            "onnx fp32": fp32,
            **{f"onnx int8 {m}": quantize(fp32, tmp / f"int8_{m}.onnx", m, feeds) for m in QUANTIZATIONS},
        }
        rows = model_rows(model, config, paths, args.runs, args.warmup, bound_ms)
        print_model_table(rows)
        fastest_int8 = min((f"onnx int8 {m}" for m in QUANTIZATIONS), key=lambda name: p50(rows, name))
        bound_ratio = p50(rows, "onnx fp32") / bound_ms[(1, 1)]
        print(f"\nONNX fp32 p50 / compute-bound, 1 thread: {bound_ratio:.2f} (goal <= 1.1)")
        print(
            f"ONNX fp32 speed-up over eager, batch 1, 1 thread: "
            f"{p50(rows, 'pytorch eager') / p50(rows, 'onnx fp32'):.2f}x (goal >= 2)"
        )
        for m in QUANTIZATIONS:
            print(
                f"int8 {m} speed-up over ONNX fp32, batch 1, 1 thread: "
                f"{p50(rows, 'onnx fp32') / p50(rows, f'onnx int8 {m}'):.2f}x (goal >= 2)"
            )

        clip = five_second_clip(Path(args.clip_manifest), tmp)
        print(f"\nend to end, 5 s clip ({clip[1].name}), 1 thread, median of {args.e2e_runs}:")
        print(f"{'model':<22}{'total':>9}" + "".join(f"{s[:-3]:>9}" for s in STAGES))
        for name in ("onnx fp32", fastest_int8):
            e2e = end_to_end(paths[name], clip, args.e2e_runs)
            print(f"{name:<22}{e2e['latency_ms']:>9.1f}" + "".join(f"{e2e[s]:>9.1f}" for s in STAGES))
        print("(goal: total <= 250 ms)")

        test_manifest = args.test_manifest or (
            str(Path(config.train_manifest).parent / "test_manifest.txt") if args.checkpoint else None
        )
        if test_manifest:
            print(f"\ntest split {test_manifest}, decoder {config.decoder}:")
            for name, scores in split_scores(paths, Path(test_manifest)).items():
                print(
                    f"{name:<22} WER {scores['wer']:.4f}  CER {scores['cer']:.4f}  "
                    f"({scores['utterances']} utterances, {scores['failed']} failed)"
                )
            reference = evaluate_decoding(decoding_for(model, config), test_manifest)
            print(f"{'pytorch (evaluate)':<22} WER {reference['wer']:.4f}  CER {reference['cer']:.4f}")


if __name__ == "__main__":
    main()
