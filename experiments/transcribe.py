"""Transcribe an audio + video pair, or every line of a manifest, with a trained model; one JSON line per utterance.

    python experiments/transcribe.py --model outputs/train/best_model.pth --audio clip.wav --video clip.mp4
    python experiments/transcribe.py --model outputs/train/best_model.pth --video clip.mp4    # the lips alone
    python experiments/transcribe.py --model outputs/sweeps/NAME/champion.onnx \
        --manifest data/corpus/medium/test_manifest.txt > predictions.jsonl
    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db \
        python experiments/transcribe.py --model models:/avasr@champion --audio clip.wav --video clip.mp4

Each line holds transcript, latency_ms and its stage timings, the input the model got (audio+video, or one stream:
given alone, or audio when no face is found in the video), and with a reference (--transcript, or the manifest's)
wer and cer. With --manifest, a last line on stderr gives the corpus WER/CER; utterances whose files
cannot be used are JSON lines with an "error" and make the exit status 1.
"""

import argparse
import json
import sys

from tqdm.auto import tqdm

from avasr.cli import FAILED, add_dataclass_arguments, run
from avasr.config import DECODERS
from avasr.ship.inference import DEVICES, AVASRInference, InferenceOptions, corpus_scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a .pth checkpoint, an .onnx file or models:/avasr@champion")
    parser.add_argument("--audio", help="audio file of one utterance (alone: the model hears it without lips)")
    parser.add_argument("--video", help="video file of one utterance (alone: the model reads the lips only)")
    parser.add_argument("--transcript", help="reference text of that utterance: adds wer and cer")
    parser.add_argument("--manifest", help="audio_path|video_path|transcript per line, instead of --audio/--video")
    add_dataclass_arguments(parser, InferenceOptions, choices={"device": DEVICES, "decoder": ("", *DECODERS)})
    args = parser.parse_args()
    one_clip = bool(args.audio or args.video)
    if one_clip == bool(args.manifest):
        parser.error("give either --audio and/or --video, or --manifest")
    if args.manifest and args.transcript:
        parser.error("--transcript is for one pair; a manifest holds its own references")
    options = {k: v for k, v in vars(args).items() if k in InferenceOptions.__dataclass_fields__}
    engine = AVASRInference(args.model, **options)
    if not args.manifest:
        print(json.dumps(engine.transcribe(args.audio, args.video, args.transcript)))
        return 0
    results = []
    for result in tqdm(engine.transcribe_manifest(args.manifest), desc="transcribe", unit="utt", file=sys.stderr):
        results.append(result)
        print(json.dumps(result), flush=True)
    scores = corpus_scores(results)
    print(json.dumps(scores), file=sys.stderr)
    return FAILED if scores["failed"] else 0


if __name__ == "__main__":
    run(main)
