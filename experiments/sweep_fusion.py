"""Sweep fusion x dropout x learning rate with Ray Tune; every trial is a Ray Train run tracked in MLflow; the best
run within the parameter and latency budgets is exported to ONNX and registered as avasr@champion.

    python experiments/sweep_fusion.py --space smoke                    # the built-in medium corpus, minutes
    python experiments/sweep_fusion.py --space fusion --train-manifest M1 --val-manifest M2 --gpus-per-trial 1
    python experiments/sweep_fusion.py --space smoke --resume           # continue an interrupted sweep
    python experiments/sweep_fusion.py --space path/to/my_space.py --address auto --storage-path /shared/sweeps
"""

import argparse
from pathlib import Path
from textwrap import fill

from avasr.cli import add_dataclass_arguments, run
from avasr.corpus.splits import SHORT_NAMES
from avasr.corpus.synth import build_corpus
from avasr.sweep.champion import SELECTION_METRICS
from avasr.sweep.driver import SweepOptions, run_sweep
from avasr.sweep.leaderboard import leaderboard
from avasr.sweep.spaces import SCHEDULERS, available_spaces
from avasr.sweep.tracking import sqlite_path
from avasr.sweep.verdict import PREFERENCES

SWEEP_CORPUS_SIZE = "medium"  # the default data, built when missing
SWEEP_CORPUS = f"data/corpus/{SWEEP_CORPUS_SIZE}"
FAILED, INTERRUPTED = 1, 130  # exit codes; 130 is the shell's for Ctrl-C


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(
        parser,
        SweepOptions,
        choices={"scheduler": SCHEDULERS, "select_on": SELECTION_METRICS, "prefer": PREFERENCES},
        defaults={
            "train_manifest": f"{SWEEP_CORPUS}/train_manifest.txt",
            "val_manifest": f"{SWEEP_CORPUS}/val_manifest.txt",
            "test_manifest": None,
        },
    )
    parser.epilog = (
        f"spaces: {', '.join(available_spaces())}. --test-manifest defaults to the built-in corpus's "
        "unseen speakers when training on it, else to none."
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.test_manifest is None:
        args.test_manifest = f"{SWEEP_CORPUS}/test_manifest.txt" if args.train_manifest.startswith(SWEEP_CORPUS) else ""
    if args.train_manifest.startswith(SWEEP_CORPUS) and not Path(args.train_manifest).exists():
        build_corpus(SWEEP_CORPUS, size=SWEEP_CORPUS_SIZE)  # offline, seconds; its own seed: --seed is training's
    result = run_sweep(SweepOptions(**vars(args)))
    print()
    if result.verdict is not None:
        print(result.verdict.table())
        print()
        print(fill(result.verdict.sentence(), width=120))
    else:
        print(leaderboard(result.trials, result.champion))
    print(f"\nRay Tune results: {result.experiment_path}")
    if sqlite_path(result.tracking_uri):
        ui = f"mlflow ui --workers 1 --backend-store-uri {result.tracking_uri}"
        print(f"MLflow: start its UI with `make ui` ({ui}), then open")
    else:
        print(f"MLflow ({result.tracking_uri}): open")
    print(
        f"  the trials:  {result.links.runs}\n  as charts:   {result.links.charts}\n  the model:   {result.links.model}"
    )
    if result.interrupted:
        print(f"\ninterrupted: continue with --resume --name {args.name}")
        return INTERRUPTED
    if result.champion is None:
        print(f"\nno trial within the budgets (params < {args.max_params:,}, p50 <= {args.max_latency_ms} ms)")
        return FAILED
    best = result.champion
    splits = "".join(f", {SHORT_NAMES.get(name, name)} WER {wer:.3f}" for name, wer in best.split_wers)
    print(
        f"\nshipped: {best.fusion}, seed {best.seed} (val WER {best.val_wer:.3f}{splits}, test WER "
        f"{best.test_wer:.3f}), run {best.run_id}"
    )
    if result.ship_error:
        print(f"not registered: {result.ship_error}")
        return FAILED
    if result.onnx_path:
        print(f"ONNX: {result.onnx_path} (registered as avasr@champion, version {result.model_version})")
    return 0


if __name__ == "__main__":
    run(main)
