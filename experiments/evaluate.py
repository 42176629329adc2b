"""Print corpus WER and CER of a checkpoint on a manifest, clean or in noise at fixed SNRs, on both streams or one.

    python experiments/evaluate.py --checkpoint outputs/run/best_model.pth \
        --manifest data/corpus/smoke/test_manifest.txt --decoder beam --save-predictions
    python experiments/evaluate.py --checkpoint outputs/run/best_model.pth \
        --manifest data/corpus/smoke/test_manifest.txt --snr -10 -5 0 5 10 --noise babble --draws 3

With --snr, each SNR's WER/CER is the mean over --draws noise draws (seeds --noise-seed, --noise-seed + 1, ...).
--modalities audio (or video) feeds the model that stream alone, the other blanked; a video without a face always
runs on audio alone, and the count is printed. The full report across inputs and SNRs: experiments/robustness.py.
"""

import argparse
from pathlib import Path

from avasr.cli import run
from avasr.config import DECODERS, MODALITIES
from avasr.data.mixing import NOISE_KINDS
from avasr.evaluation import DEFAULT_NOISE, DEFAULT_NOISE_DRAWS, PREDICTIONS_FILE, evaluate_at_snrs, evaluate_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .pth written by training (carries its config)")
    parser.add_argument("--manifest", required=True, help="audio_path|video_path|transcript per line")
    parser.add_argument("--decoder", choices=DECODERS, help="default: the checkpoint's")
    parser.add_argument("--beam-size", type=int, help="default: the checkpoint's")
    parser.add_argument("--lexicon", help="word list restricting beam search (implies --decoder beam)")
    parser.add_argument(
        "--modalities",
        choices=MODALITIES,
        help="the streams fed to the model (default: the checkpoint's); the other is blanked",
    )
    parser.add_argument(
        "--save-predictions",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help=f"write id/reference/hypothesis TSV (default: {PREDICTIONS_FILE} beside the checkpoint)",
    )
    parser.add_argument(
        "--snr",
        type=float,
        nargs="+",
        metavar="DB",
        help="evaluate with noise mixed in at each of these SNRs (dB) instead of clean",
    )
    parser.add_argument(
        "--noise",
        choices=NOISE_KINDS,
        default=DEFAULT_NOISE,
        help="noise kind for --snr (babble: other speakers of the manifest)",
    )
    parser.add_argument("--draws", type=int, default=DEFAULT_NOISE_DRAWS, help="noise draws averaged per SNR")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the first noise draw")
    args = parser.parse_args()
    if args.snr and args.save_predictions is not None:
        parser.error("--save-predictions writes clean predictions only: leave out --snr")
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    if args.snr:
        table = evaluate_at_snrs(
            args.checkpoint,
            args.manifest,
            args.snr,
            args.noise,
            args.draws,
            args.noise_seed,
            args.decoder,
            args.beam_size,
            args.lexicon,
            args.modalities,
        )
        print(table.format())
        return
    predictions = None
    if args.save_predictions is not None:
        predictions = Path(args.save_predictions or Path(args.checkpoint).parent / PREDICTIONS_FILE)
    result = evaluate_checkpoint(
        args.checkpoint,
        args.manifest,
        args.decoder,
        args.beam_size,
        args.lexicon,
        predictions,
        modalities=args.modalities,
    )
    print(f"utterances: {result['utterances']} ({result['skipped']})")
    print(f"input: {result['modalities']}")
    print(f"decoder: {result['decoder']}")
    print(f"WER: {result['wer']:.4f}")
    print(f"CER: {result['cer']:.4f}")
    if predictions:
        print(f"predictions: {predictions}")


if __name__ == "__main__":
    run(main)
