"""Import a downloaded GRID or LRS2/LRS3 corpus: write manifests (and extract 16 kHz WAVs) under --out.

python experiments/import_corpus.py --format grid --root data/grid --out data/grid_manifests
python experiments/import_corpus.py --format lrs3 --root data/lrs3 --out data/lrs3_manifests --jobs 8

The layouts each format expects, what each split becomes and what is skipped: docs/data.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avasr.corpus.grid import (
    ALIGNMENT_FOLDER,
    AUDIO_MODES,
    GRID_FRAMES,
    GRID_TEST_SPEAKERS,
    GRID_VAL_PERCENT,
    NO_ALIGNMENT,
    CorpusError,
    ImportReport,
    import_grid,
)
from avasr.corpus.lrs import LRS3_VAL_PERCENT, MAX_SECONDS, MIN_PAUSE, import_lrs2, import_lrs3

FORMATS = ("grid", "lrs2", "lrs3")


def import_corpus(corpus_format: str, root: Path, out: Path, args: argparse.Namespace) -> ImportReport:
    if corpus_format == "grid":
        return import_grid(
            root,
            out,
            audio=args.grid_audio,
            frames=args.frames,
            zenodo_remap=args.zenodo_remap,
            test_speakers=tuple(args.test_speakers),
            val_percent=GRID_VAL_PERCENT if args.val_percent is None else args.val_percent,
            jobs=args.jobs,
        )
    cutting = dict(max_seconds=args.max_seconds, min_pause=args.min_pause, jobs=args.jobs)
    if corpus_format == "lrs2":
        return import_lrs2(root, out, **cutting)
    if corpus_format == "lrs3":
        percent = LRS3_VAL_PERCENT if args.val_percent is None else args.val_percent
        return import_lrs3(root, out, val_ids=args.val_ids, val_percent=percent, **cutting)
    raise CorpusError(f"unknown corpus format {corpus_format!r} (known: {', '.join(FORMATS)})")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS, help="corpus layout")
    parser.add_argument("--root", required=True, type=Path, help="the unpacked corpus")
    parser.add_argument("--out", required=True, type=Path, help="where manifests (and extracted audio) are written")
    parser.add_argument("--jobs", type=int, default=None, help="videos decoded / ffmpeg processes at once (CPU cores)")
    parser.add_argument(
        "--val-percent",
        type=int,
        default=None,
        help=f"GRID: share of the non-test clips for val (default {GRID_VAL_PERCENT}); LRS3: share of the trainval "
        f"talks held out for val (default {LRS3_VAL_PERCENT}), a hash of the names",
    )
    grid = parser.add_argument_group("GRID")
    grid.add_argument(
        "--grid-audio",
        choices=AUDIO_MODES,
        default="auto",
        help="auto: raw 50 kHz WAV beside the video, else the video's track; mpg: the track; raw: raw WAVs only; "
        "25k: audio_25k put back on the video's timeline by the alignment (default: auto)",
    )
    grid.add_argument(
        "--frames", type=int, default=GRID_FRAMES, help=f"frames a video must have (default {GRID_FRAMES}; 0: any)"
    )
    grid.add_argument(
        "--zenodo-remap",
        action="store_true",
        help="reassign the Zenodo release's alignment folders to their real speakers (lhotse-speech/lhotse#1502)",
    )
    grid.add_argument(
        "--test-speakers", nargs="+", default=list(GRID_TEST_SPEAKERS), help="held-out speakers (default: LipNet's)"
    )
    lrs = parser.add_argument_group("LRS2/LRS3")
    lrs.add_argument(
        "--max-seconds",
        type=float,
        default=MAX_SECONDS,
        help=f"clips with a word table (pretrain) whose words run longer are cut at pauses (default {MAX_SECONDS:g})",
    )
    lrs.add_argument(
        "--min-pause", type=float, default=MIN_PAUSE, help=f"pauses longer than this may cut (default {MIN_PAUSE:g} s)"
    )
    lrs.add_argument(
        "--val-ids",
        type=Path,
        help="LRS3: a file of trainval talk folders (or <talk>/<NNNNN> clip ids) held out for val, instead of the hash",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = import_corpus(args.format, args.root, args.out, args)
    except CorpusError as e:
        print(f"import_corpus: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    unaligned = len(report.skipped.get(NO_ALIGNMENT, []))
    zenodo_layout = (args.root / ALIGNMENT_FOLDER).is_dir()
    if args.format == "grid" and zenodo_layout and not args.zenodo_remap and unaligned > report.total_kept:
        print(f"hint: {unaligned} clips lack an alignment; for the Zenodo release try --zenodo-remap", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
