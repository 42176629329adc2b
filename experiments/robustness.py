"""What the lips add: WER and CER of audio alone, video alone and both, clean and at each SNR, on unseen speakers.

    python experiments/robustness.py --run outputs/run/best_model.pth --snrs clean,10,5,0,-5,-10 --noise babble
    python experiments/robustness.py --run 3f2a91c0d4e5...            # a sweep trial's run id: logged to the run
    python experiments/robustness.py --sweep smoke-20261201-101500     # each fusion's best trial + one figure

Writes robustness.md (the table), robustness.csv and robustness.png (WER against SNR, one line per input) to --out
(default: robustness/ beside the checkpoint). For a run id they are also logged to the run in MLflow, with
robust_wer_<a|v|av>_<condition> metrics; --sweep adds a figure comparing the fusions' audio-visual WER to the parent.
Each SNR's scores are the mean over --draws fixed noise draws: a rerun gives the same numbers. An SNR list that
starts with a negative number needs an equals sign: --snrs=-5,0,clean.
"""

import argparse
import dataclasses
from pathlib import Path

from avasr.cli import add_dataclass_arguments, run
from avasr.config import DECODERS
from avasr.data.mixing import NOISE_KINDS
from avasr.robustness import ReportOptions, report_checkpoint
from avasr.sweep.driver import PROJECT_DIR, SweepOptions
from avasr.sweep.robustness import report_run, report_sweep
from avasr.sweep.tracking import check_tracking_uri, resolve_tracking_uri

DEFAULT_SWEEP_OUT = Path("outputs/robustness")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a .pth checkpoint, or the MLflow run id of a finished sweep trial")
    source.add_argument(
        "--sweep",
        nargs="?",
        const="",
        help="a tracked sweep's name (default: the newest sweep): each fusion's best trial",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"the report's folder (default: robustness/ beside the checkpoint; {DEFAULT_SWEEP_OUT}/SWEEP for --sweep)",
    )
    add_dataclass_arguments(parser, ReportOptions, choices={"noise": NOISE_KINDS, "decoder": DECODERS})
    add_dataclass_arguments(parser, SweepOptions, fields=("experiment", "mlflow_uri"))
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    options = ReportOptions(**{f.name: getattr(args, f.name) or f.default for f in dataclasses.fields(ReportOptions)})
    if args.run and Path(args.run).suffix in (".pth", ".pt"):
        report, files = report_checkpoint(args.run, options, args.out)
        print(report.markdown())
        print("files: " + ", ".join(map(str, files)))
        return 0
    tracking_uri = resolve_tracking_uri(args.mlflow_uri, PROJECT_DIR)
    check_tracking_uri(tracking_uri)
    if args.run:
        print(report_run(tracking_uri, args.run, options, args.out).markdown())
        print(f"logged to run {args.run} in {tracking_uri}")
        return 0
    out = args.out or DEFAULT_SWEEP_OUT / (args.sweep or "latest")
    for fusion, report in report_sweep(tracking_uri, args.experiment, args.sweep or None, options, out).items():
        print(f"## {fusion}\n{report.markdown()}")
    print(f"files: {out}; the fusions' figure is logged to the sweep's parent run")
    return 0


if __name__ == "__main__":
    run(main)
