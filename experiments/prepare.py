r"""Fill the feature cache for manifests, fanned out as Ray tasks over every node of a cluster, and index them.

    python experiments/prepare.py --manifest data/corpus/medium/train_manifest.txt \
        --manifest data/corpus/medium/val_manifest.txt --cache-dir data/cache
    python experiments/prepare.py --manifest /shared/lrs3/train.txt --cache-dir /shared/cache --address auto

Resumable: finished entries are skipped, so an interrupted run goes on where it stopped. A second run reads no
media (the index knows every file by size and modification time); --rehash reads them all again. Give the same
preprocessing flags (or --config) as training, or the entries will be made for another setting. Prints what was
done (utterances/s, frames/s, cache size) and what training would load or skip; exits 1 listing every unusable
utterance (file and line) after preparing all the others.
"""

import argparse

from avasr.cli import add_dataclass_arguments, run
from avasr.config import Config, config_from_args
from avasr.data.cache import PREPROCESSING_FIELDS
from avasr.data.prepare import prepare_on_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", action="append", required=True, help="a manifest to prepare (repeatable)")
    parser.add_argument(
        "--address",
        help="Ray cluster to use ('auto': the one this node belongs to); default: a local Ray on this machine's cores",
    )
    parser.add_argument("--rehash", action="store_true", help="ignore the index: hash every media file again")
    parser.add_argument("--config", help="JSON file with configuration fields (e.g. the training's)")
    add_dataclass_arguments(
        parser.add_argument_group("preprocessing (defaults: the original design)"),
        Config,
        fields=("cache_dir", *PREPROCESSING_FIELDS),
        keep_defaults=False,
    )
    args = parser.parse_args()
    config = config_from_args(args)
    report = prepare_on_ray(args.manifest, config, args.address, rehash=args.rehash)
    print(report.summary())
    report.check()


if __name__ == "__main__":
    run(main)
