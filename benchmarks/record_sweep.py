"""Record a finished sweep for offline analysis: every configuration's per-utterance val errors over all its seeds,
read back from MLflow (each trial's errors/val.csv), written as the .npz that avasr.sweep.racing reads.

    python experiments/sweep_fusion.py --space smoke --seeds 5 --name full-repeat    # a full-repeat sweep
    python benchmarks/record_sweep.py --sweep full-repeat --out outputs/full-repeat.npz
    python benchmarks/calibration.py --recorded outputs/full-repeat.npz               # racing replayed on it

Only configurations that finished every seed are recorded (a full repeat); the others are named and left out. It
also prints what the recording says about the corpus: the between-seed and between-speaker spread of WER, the
numbers the calibration's power simulation takes.
"""

import argparse
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from avasr.sweep.driver import DEFAULT_EXPERIMENT, PROJECT_DIR
from avasr.sweep.racing import save_recording
from avasr.sweep.shipping import sweep_trials, val_errors
from avasr.sweep.significance import corpus_wer
from avasr.sweep.tracking import resolve_tracking_uri
from avasr.sweep.verdict import group, labels, trial_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", help="the sweep's name (default: the newest with a finished trial)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--mlflow-uri", help="default: MLFLOW_TRACKING_URI, else mlflow.db in the project")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    args = parser.parse_args()
    uri = resolve_tracking_uri(args.mlflow_uri, PROJECT_DIR)
    found = sweep_trials(uri, args.experiment, args.sweep)
    errors = val_errors(MlflowClient(uri), found.trials)
    groups = group([t for t in found.trials if t.run_id in errors])
    seeds = max(len(ts) for ts in groups.values())
    complete = {cid: ts for cid, ts in groups.items() if len(ts) == seeds}
    names = labels(complete)
    for cid in sorted(set(groups) - set(complete)):
        print(f"left out: configuration {cid} finished {len(groups[cid])} of {seeds} seeds")
    recorded, seed_values = {}, None
    for cid, trials in complete.items():
        trials = sorted(trials, key=lambda t: t.seed)  # seed s is the same seed for every configuration
        recorded[names[cid]] = trial_scores(trials, errors, names[cid])
        seed_values = recorded[names[cid]].seed_ids
    save_recording(args.out, recorded, seed_values)
    print(f"{args.out}: {len(recorded)} configurations x {seeds} seeds of sweep {found.parent.info.run_name!r}")
    for name, scores in recorded.items():
        per_seed = corpus_wer(scores.errors, scores.words)  # (S,)
        speakers = sorted(set(scores.speakers))
        per_speaker = [
            corpus_wer(scores.errors[:, scores.speakers == s], scores.words[scores.speakers == s]) for s in speakers
        ]
        print(
            f"  {name:<12} WER by seed {np.round(per_seed, 3).tolist()}: mean {per_seed.mean():.3f}, between-seed SD "
            f"{per_seed.std(ddof=1):.3f}; between-speaker SD {np.std(np.mean(per_speaker, axis=1), ddof=1):.3f} "
            f"({len(speakers)} speakers, {scores.words.size} utterances)"
        )


if __name__ == "__main__":
    main()
