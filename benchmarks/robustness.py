"""What the lips add in noise, checked against the goals below: train one model (or take a checkpoint), then report
audio-only, video-only and audio-visual WER at each SNR on the unseen test speakers, greedy and with the lexicon,
and what the augmentation costs per epoch.

    make corpus-full    # data/corpus/full: 6000 utterances, 32 training speakers and 8 unseen (about 1.5 min)
    python benchmarks/robustness.py --corpus data/corpus/full --fusion attention --feature-dim 256 \\
        --encoder-channels 16 32 64 --lip-size 32 --temporal-layers 3 --batch-size 16 --lr 0.002 --dropout 0.1 \\
        --epochs 40 --patience 40 --lr-schedule cosine --warmup-epochs 1 --noise-prob 0.7 --noise-snr-db -15 15 \\
        --modality-dropout 0.3 --freq-masks 2 --audio-time-masks 2 --video-time-masks 1 --data-workers 1
    python benchmarks/robustness.py --corpus data/corpus/full --checkpoint outputs/bench-robustness/best_model.pth

The same flags with `--corpus data/corpus/medium --epochs 70 --patience 70` are the quicker recipe. Results, times
and which goals each meets: docs/benchmarks.md ("Noise").

Goals: AV WER <= 0.4 x audio WER at 0 and -5 dB babble; AV never worse than the better single stream;
with the lexicon AV <= 15 % at 0 dB, clean AV <= 1 % (<= 5 % greedy), video alone <= 30 %.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from avasr.augment import Augmenter
from avasr.checkpoint import BEST_CHECKPOINT
from avasr.config import Config, add_config_arguments, config_from_args
from avasr.data.dataset import AVDataset
from avasr.data.loader import make_loader
from avasr.evaluation import decoding_for, load_decoding
from avasr.model import count_parameters
from avasr.robustness import RobustnessReport, parse_snrs, robustness_report
from avasr.sweep.tracking import read_metrics_csv
from avasr.train import METRICS_FILE, fit

GOAL_AV_OVER_AUDIO = 0.4  # at 0 and -5 dB
GOAL_AV_LEXICON_0DB, GOAL_AV_LEXICON_CLEAN, GOAL_AV_GREEDY_CLEAN, GOAL_VIDEO_LEXICON = 0.15, 0.01, 0.05, 0.30


def augmentation_seconds(config: Config, train: AVDataset) -> float:
    """One epoch of augmentation alone (no model): what it adds to an epoch's data time."""
    augmenter, rng = Augmenter(config, train), np.random.default_rng(config.seed)
    started = time.perf_counter()
    for batch in make_loader(train, config, shuffle=True):
        augmenter(batch, rng)
    return time.perf_counter() - started


def goal_lines(greedy: RobustnessReport, lexicon: RobustnessReport | None) -> list[str]:
    lines = []
    for name, report in (("greedy", greedy), ("lexicon", lexicon)):
        if report is None:
            continue
        for snr in (0.0, -5.0):
            a, av = report.wer("audio", snr), report.wer("audio+video", snr)
            lines.append(
                f"AV / audio WER at {snr:g} dB ({name}): {av:.3f} / {a:.3f} = {av / a:.2f} "
                f"(goal <= {GOAL_AV_OVER_AUDIO}) {'met' if av <= GOAL_AV_OVER_AUDIO * a else 'NOT met'}"
            )
        worse = [
            f"{'clean' if snr is None else f'{snr:g} dB'}"
            for snr in report.conditions()
            if report.wer("audio+video", snr) > min(report.wer("audio", snr), report.wer("video", snr))
        ]
        lines.append(
            f"AV never worse than the better single stream ({name}): "
            + ("met" if not worse else f"NOT met at {', '.join(worse)}")
        )
    checks = [("clean AV, greedy", greedy.wer("audio+video", None), GOAL_AV_GREEDY_CLEAN)]
    if lexicon is not None:
        checks += [
            ("clean AV, lexicon", lexicon.wer("audio+video", None), GOAL_AV_LEXICON_CLEAN),
            ("AV at 0 dB, lexicon", lexicon.wer("audio+video", 0.0), GOAL_AV_LEXICON_0DB),
            ("video alone, lexicon", lexicon.wer("video", None), GOAL_VIDEO_LEXICON),
        ]
    for name, wer, goal in checks:
        lines.append(f"{name}: WER {wer:.3f} (goal <= {goal}) {'met' if wer <= goal else 'NOT met'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus", default="data/corpus/medium", help="folder with train/val/test_manifest.txt and lexicon.txt"
    )
    parser.add_argument("--checkpoint", help="report on this .pth instead of training one")
    parser.add_argument("--out", default="outputs/bench-robustness", help="training output folder")
    parser.add_argument("--snrs", default="clean,10,5,0,-5,-10", help="comma-separated dB; clean for no noise")
    parser.add_argument("--noise", default="babble")
    parser.add_argument("--draws", type=int, default=3)
    add_config_arguments(parser)
    args = parser.parse_args()
    corpus = Path(args.corpus)
    started = time.perf_counter()
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        config = config_from_args(args).replace(
            train_manifest=str(corpus / "train_manifest.txt"),
            val_manifest=str(corpus / "val_manifest.txt"),
            output_dir=args.out,
        )
        fit(config)
        checkpoint = Path(args.out) / BEST_CHECKPOINT
    trained_s = time.perf_counter() - started
    greedy = load_decoding(checkpoint, decoder="greedy")
    config = greedy.config
    params = count_parameters(greedy.model)
    test = AVDataset.from_manifest(
        corpus / "test_manifest.txt", config.replace(modalities="audio+video"), keep_speech=True
    )
    snrs = parse_snrs(args.snrs)
    reports = {"greedy": robustness_report(greedy, test, snrs, args.noise, args.draws)}
    lexicon = corpus / "lexicon.txt"
    if lexicon.is_file():
        with_lexicon = decoding_for(greedy.model, config, lexicon=str(lexicon))
        reports["lexicon"] = robustness_report(with_lexicon, test, snrs, args.noise, args.draws)
    print(
        f"\n{checkpoint}: {config.fusion} fusion, {params:,} parameters"
        + ("" if args.checkpoint else f", trained in {trained_s / 60:.1f} min")
    )
    for name, report in reports.items():
        print(f"\n## {name} decoding\n{report.markdown()}")
    print("\n## goals\n" + "\n".join(goal_lines(reports["greedy"], reports.get("lexicon"))))
    metrics = checkpoint.parent / METRICS_FILE
    if metrics.is_file() and config.noise_prob:
        seconds = np.mean([row["seconds"] for row in read_metrics_csv(metrics)])
        train = AVDataset.from_manifest(config.train_manifest, config, progress=False, keep_speech=True)
        augment_s = augmentation_seconds(config, train)
        print(
            f"\naugmentation: {augment_s:.1f} s per epoch of {len(train)} utterances, alone; epochs took "
            f"{seconds:.1f} s on average with it ({augment_s / seconds:.0%})"
        )


if __name__ == "__main__":
    main()
