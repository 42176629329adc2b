"""Ship the best run of a finished sweep: the lowest val WER among its trials within the budgets, exported to ONNX,
checked against PyTorch in onnxruntime and registered in MLflow as avasr@champion. The sweep does this at its end;
run this afterwards, e.g. with a tighter latency budget for a smaller device, or after a sweep run with --no-ship.

    python experiments/export_best.py --experiment avasr-fusion                      # the newest sweep
    python experiments/export_best.py --experiment avasr-fusion --sweep smoke-20261125-101500 --max-latency-ms 20
"""

import argparse
from pathlib import Path

from avasr.champion import DEFAULT_MAX_LATENCY_MS, DEFAULT_MAX_PARAMS, export_best, leaderboard
from avasr.cli import run
from avasr.sweep import DEFAULT_EXPERIMENT, PROJECT_DIR
from avasr.tracking import check_tracking_uri, resolve_tracking_uri


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment of the sweep")
    parser.add_argument("--sweep", help="the sweep's name (its parent run, --name of sweep_fusion.py); default: "
                                        "the newest sweep of the experiment")
    parser.add_argument("--mlflow-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db")
    parser.add_argument("--max-params", type=int, default=DEFAULT_MAX_PARAMS, help="budget: parameters below this")
    parser.add_argument("--max-latency-ms", type=float, default=DEFAULT_MAX_LATENCY_MS,
                        help="budget: ONNX Runtime CPU p50, batch 1, 5 s input, one thread")
    parser.add_argument("--out", type=Path, help="where the ONNX file goes; default: champion.onnx in the sweep's "
                                                 "folder")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    tracking_uri = resolve_tracking_uri(args.mlflow_uri, PROJECT_DIR)
    check_tracking_uri(tracking_uri)
    shipped = export_best(tracking_uri, args.experiment, args.sweep, args.max_params, args.max_latency_ms, args.out)
    print(leaderboard(shipped.trials, shipped.champion))
    best = shipped.champion
    print(f"\nbest: {best.fusion} (val WER {best.val_wer:.3f}, p50 {best.latency_p50_ms:.1f} ms), run {best.run_id}")
    print(f"ONNX: {shipped.onnx_path} (registered as avasr@champion, version {shipped.model_version})")
    return 0


if __name__ == "__main__":
    run(main)
