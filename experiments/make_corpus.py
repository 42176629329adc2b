"""Build the built-in offline audio-visual GRID corpus: espeak-ng, festival and flite voices, lip-synced faces.

python experiments/make_corpus.py --size smoke --out data/corpus/smoke

Manifests: train, val (seen voices and faces), test_unseen_voice, test_unseen_face, and test (a speech engine
and faces held out of training entirely). docs/corpus.md describes the voices, faces and splits.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2

from avasr.cli import run
from avasr.corpus import faces, voices
from avasr.corpus.synth import SIZES, SPLITS, build_corpus
from avasr.errors import OutputError

DEFAULT_OUT = "data/corpus/{size}"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="smoke",
        help="smoke: 200 utterances, 14 training speakers + 2 per test split; small: 480, 18 + 2 x 3; "
        "medium: 1392 (12 val utterances per training speaker), 24 + 4 x 3; full: 6000, 32 + 8 x 3",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=42, help="same seed, same corpus (default: 42)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument(
        "--held-out-engine", choices=voices.HELD_OUT_ENGINES, default=voices.HELD_OUT_ENGINE,
        help="the test split's speech engine, never heard in training: flite (training hears espeak-ng and "
        "festival) or espeak-ng (training hears festival and flite) (default: flite)",
    )  # fmt: skip
    parser.add_argument(
        "--faces-grid", type=Path, default=None, metavar="PNG",
        help="only write a picture of every face identity, mouth closed and open (docs/images/corpus_faces.png)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.faces_grid:
        args.faces_grid.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(args.faces_grid), faces.contact_sheet()):
            raise OutputError(f"{args.faces_grid}: cannot write the picture (a .png path in a writable folder?)")
        print(f"faces: {args.faces_grid}")
        return args.faces_grid
    if args.seed < 0:
        parser.error(f"--seed must be at least 0, got {args.seed}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or Path(DEFAULT_OUT.format(size=args.size))
    corpus = build_corpus(out, args.size, args.seed, args.workers, args.held_out_engine)
    manifests = ", ".join(f"{split}_manifest.txt" for split in SPLITS)
    print(f"corpus ready: {corpus} ({manifests}, speakers.tsv, corpus.json)")
    return corpus


if __name__ == "__main__":
    run(main)
