"""Save a grid image of lip crops over time for the first utterances of a manifest.

python experiments/show_crops.py --manifest data/corpus/smoke/test_manifest.txt --out outputs/crops.png
"""

import argparse

from avasr.cli import run
from avasr.config import Config
from avasr.visualize import show_crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", default="outputs/crops.png")
    parser.add_argument("--utterances", type=int, default=4, help="rows")
    parser.add_argument("--frames", type=int, default=10, help="crops per row, evenly spread in time")
    parser.add_argument("--fps", type=float, default=Config.fps)
    args = parser.parse_args()
    if args.utterances < 1 or args.frames < 1:
        parser.error(f"--utterances and --frames must be at least 1, got {args.utterances} and {args.frames}")
    print(show_crops(args.manifest, args.out, Config(fps=args.fps), args.utterances, args.frames))


if __name__ == "__main__":
    run(main)
