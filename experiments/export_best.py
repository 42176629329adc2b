"""Ship a finished sweep's best run, or any run on its Pareto front: exported to ONNX, checked against PyTorch in
onnxruntime and registered in MLflow as avasr@champion. The sweep ships its best run at its end; run this
afterwards, e.g. with a tighter latency budget for a smaller device, to ship another trade-off of the front, or
after a sweep run with --no-ship.

    python experiments/export_best.py                                   # the newest sweep, best within budgets
    python experiments/export_best.py --sweep smoke-20261125-101500 --max-latency-ms 20
    python experiments/export_best.py --list-front                      # the trials no other trial beats
    python experiments/export_best.py --run 3f2a91c0                    # ship that front member
"""

import argparse
from pathlib import Path

from avasr.cli import add_dataclass_arguments, run
from avasr.sweep.champion import SELECTION_METRICS, pareto_front
from avasr.sweep.driver import PROJECT_DIR, SweepOptions
from avasr.sweep.leaderboard import leaderboard
from avasr.sweep.shipping import export_best, sweep_trials
from avasr.sweep.tracking import check_tracking_uri, resolve_tracking_uri
from avasr.sweep.verdict import PREFERENCES


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(
        parser,
        SweepOptions,
        fields=("experiment", "mlflow_uri", "max_params", "max_latency_ms", "select_on", "prefer"),
        choices={"select_on": SELECTION_METRICS, "prefer": PREFERENCES},
    )
    parser.add_argument(
        "--sweep",
        help="the sweep's name (its parent run, --name of sweep_fusion.py); default: "
        "the newest sweep of the experiment",
    )
    parser.add_argument("--list-front", action="store_true", help="print the sweep's Pareto front and stop")
    parser.add_argument(
        "--run", help="ship this Pareto-front run (its run id or a prefix of it) instead of the best within the budgets"
    )
    parser.add_argument(
        "--out", type=Path, help="where the ONNX file goes; default: champion.onnx in the sweep's folder"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    tracking_uri = resolve_tracking_uri(args.mlflow_uri, PROJECT_DIR)
    check_tracking_uri(tracking_uri)
    if args.list_front:
        found = sweep_trials(tracking_uri, args.experiment, args.sweep)
        if found.passed_over:
            print(f"passed over newer sweeps without a finished trial: {', '.join(found.passed_over)}")
        parent, trials = found.parent, found.trials
        print(f"sweep {parent.info.run_name!r}: Pareto front of val WER, CPU latency p50 and parameters")
        for t in pareto_front(trials):
            print(
                f"{t.run_id}  {t.fusion:<10} val WER {t.val_wer:.3f}  p50 {t.latency_p50_ms:6.1f} ms  "
                f"{t.param_count:>9,} params"
            )
        return 0
    shipped = export_best(
        tracking_uri,
        args.experiment,
        args.sweep,
        args.max_params,
        args.max_latency_ms,
        args.out,
        run_id=args.run,
        select_on=args.select_on,
        prefer=args.prefer,
    )
    print(leaderboard(shipped.trials, shipped.champion))
    best = shipped.champion
    print(f"\nshipped: {best.fusion} (val WER {best.val_wer:.3f}, p50 {best.latency_p50_ms:.1f} ms), run {best.run_id}")
    print(f"ONNX: {shipped.onnx_path} (registered as avasr@champion, version {shipped.model_version})")
    return 0


if __name__ == "__main__":
    run(main)
