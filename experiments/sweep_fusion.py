"""Sweep fusion x dropout x learning rate with Ray Tune; every trial is a Ray Train run tracked in MLflow; the best
run within the parameter and latency budgets is exported to ONNX and registered as avasr@champion.

    python experiments/sweep_fusion.py --space smoke                    # the built-in smoke corpus, minutes
    python experiments/sweep_fusion.py --space fusion --train-manifest M1 --val-manifest M2 --gpus-per-trial 1
    python experiments/sweep_fusion.py --space smoke --resume           # continue an interrupted sweep
    python experiments/sweep_fusion.py --space path/to/my_space.py --address auto --storage-path /shared/sweeps
"""

import argparse
from pathlib import Path

from avasr.champion import DEFAULT_MAX_LATENCY_MS, DEFAULT_MAX_PARAMS, leaderboard
from avasr.cli import run
from avasr.corpus.synth import build_corpus
from avasr.spaces import available_spaces
from avasr.sweep import DEFAULT_EXPERIMENT, SCHEDULERS, SweepOptions, run_sweep
from avasr.tracking import sqlite_path

SMOKE_CORPUS = "data/corpus/smoke"
FAILED, INTERRUPTED = 1, 130  # exit codes; 130 is the shell's for Ctrl-C


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="smoke", help=f"{' | '.join(available_spaces())} or a space file's path")
    parser.add_argument("--train-manifest", default=f"{SMOKE_CORPUS}/train_manifest.txt")
    parser.add_argument("--val-manifest", default=f"{SMOKE_CORPUS}/val_manifest.txt")
    parser.add_argument("--name", default="fusion-sweep", help="the sweep's folder and MLflow parent run name")
    parser.add_argument("--storage-path", default="outputs/sweeps", help="shared by every node on a cluster")
    parser.add_argument("--mlflow-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")
    parser.add_argument("--address", help="Ray cluster address (auto, ray://host:10001); default: a local Ray")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, help="default: 1 when the cluster has GPUs, else 0")
    parser.add_argument("--max-failures", type=int, default=2, help="worker failures a trial recovers from")
    parser.add_argument("--resource-wait-s", type=float, default=SweepOptions.resource_wait_s,
                        help="a trial that gets no CPUs/GPUs within this fails, naming who holds them")
    parser.add_argument("--mlflow-wait-s", type=float, default=SweepOptions.mlflow_wait_s,
                        help="how long to wait for a tracking server that went down before finalising")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="asha")
    parser.add_argument("--num-samples", type=int, help="default: the space's NUM_SAMPLES")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache-dir", default="data/cache", help="feature cache ('' disables it)")
    parser.add_argument("--max-params", type=int, default=DEFAULT_MAX_PARAMS, help="budget: parameters below this")
    parser.add_argument("--max-latency-ms", type=float, default=DEFAULT_MAX_LATENCY_MS,
                        help="budget: ONNX Runtime CPU p50, batch 1, 5 s input, one thread")
    parser.add_argument("--no-ship", dest="ship", action="store_false", help="do not export and register the best")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this --name")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.train_manifest.startswith(SMOKE_CORPUS) and not Path(args.train_manifest).exists():
        build_corpus(SMOKE_CORPUS, size="smoke", seed=args.seed)  # the default data: offline, about a minute
    result = run_sweep(SweepOptions(**vars(args)))
    print()
    print(leaderboard(result.trials, result.champion))
    print(f"Ray Tune results: {result.experiment_path}")
    database = sqlite_path(result.tracking_uri)
    ui = f"mlflow ui --backend-store-uri {result.tracking_uri}" if database else f"open {result.tracking_uri}"
    print(f"MLflow: {ui}  (experiment {args.experiment!r}, parent run {args.name!r})")
    if result.interrupted:
        print(f"\ninterrupted: continue with --resume --name {args.name}")
        return INTERRUPTED
    if result.champion is None:
        print(f"\nno trial within the budgets (params < {args.max_params:,}, p50 <= {args.max_latency_ms} ms)")
        return FAILED
    print(f"\nbest: {result.champion.fusion} (val WER {result.champion.val_wer:.3f}), run {result.champion.run_id}")
    if result.ship_error:
        print(f"not registered: {result.ship_error}")
        return FAILED
    if result.onnx_path:
        print(f"ONNX: {result.onnx_path} (registered as avasr@champion, version {result.model_version})")
    return 0


if __name__ == "__main__":
    run(main)
