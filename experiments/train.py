"""Train one audio-visual model from manifests (a single process; the sweep runs the same loop under Ray).

    python experiments/train.py --train-manifest data/corpus/smoke/train_manifest.txt \
        --val-manifest data/corpus/smoke/val_manifest.txt --fusion attention --epochs 20
    python experiments/train.py --resume outputs/run/last.pth          # continue exactly where it stopped

The thread count is part of the numerics: `--threads 1` trains exactly as a sweep trial with one CPU does.
"""

import argparse

import torch

from avasr.checkpoint import load_checkpoint
from avasr.cli import run
from avasr.config import Config, add_config_arguments, config_from_args
from avasr.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file with configuration fields (flags given here override it)")
    parser.add_argument("--resume", help="checkpoint (last.pth) to continue from; its config is the base")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    add_config_arguments(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Config.from_dict(load_checkpoint(args.resume)["config"]) if args.resume else None
    config = config_from_args(args, base)
    best = fit(config, resume=args.resume)
    print(
        f"best epoch {best.get('epoch')}: val WER {best.get('val_wer', float('nan')):.4f} "
        f"CER {best.get('val_cer', float('nan')):.4f}; checkpoints in {config.output_dir}"
    )


if __name__ == "__main__":
    run(main)
