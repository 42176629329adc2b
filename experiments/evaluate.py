"""Print corpus WER and CER of a checkpoint on a manifest.

    python experiments/evaluate.py --checkpoint outputs/run/best_model.pth \
        --manifest data/corpus/smoke/test_manifest.txt --decoder beam --save-predictions
"""

import argparse
from pathlib import Path

from avasr.config import DECODERS
from avasr.evaluation import PREDICTIONS_FILE, evaluate_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .pth written by training (carries its config)")
    parser.add_argument("--manifest", required=True, help="audio_path|video_path|transcript per line")
    parser.add_argument("--decoder", choices=DECODERS, help="default: the checkpoint's")
    parser.add_argument("--beam-size", type=int, help="default: the checkpoint's")
    parser.add_argument("--lexicon", help="word list restricting beam search (implies --decoder beam)")
    parser.add_argument("--save-predictions", nargs="?", const="", default=None, metavar="PATH",
                        help=f"write id/reference/hypothesis TSV (default: {PREDICTIONS_FILE} beside the checkpoint)")
    args = parser.parse_args()
    predictions = None
    if args.save_predictions is not None:
        predictions = Path(args.save_predictions or Path(args.checkpoint).parent / PREDICTIONS_FILE)
    result = evaluate_checkpoint(args.checkpoint, args.manifest, args.decoder, args.beam_size, args.lexicon,
                                 predictions)
    print(f"utterances: {result['utterances']} ({result['skipped']})")
    print(f"decoder: {result['decoder']}")
    print(f"WER: {result['wer']:.4f}")
    print(f"CER: {result['cer']:.4f}")
    if predictions:
        print(f"predictions: {predictions}")


if __name__ == "__main__":
    main()
