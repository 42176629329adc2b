"""Do the lips carry information? Train the same model briefly on audio only, video only and both, then print
CER/WER on the test speakers (unseen in training) for each, beside a chance level: random training
transcripts used as hypotheses (they follow the same grammar, so they share many words with the references).

    python benchmarks/modalities.py [--corpus data/corpus/smoke] [--epochs 30] [--decoder beam]
    # any Config field is a flag, e.g. the smoke sweep's small model:
    python benchmarks/modalities.py --feature-dim 128 --encoder-channels 8 16 32 --lip-size 32 --temporal-layers 2
"""

import argparse
import random
import tempfile
from pathlib import Path

from avasr.checkpoint import BEST_CHECKPOINT, load_model
from avasr.config import MODALITIES, Config, add_config_arguments, config_from_args
from avasr.data.dataset import AVDataset
from avasr.data.loader import make_loader
from avasr.device import pick_device
from avasr.evaluation import evaluate
from avasr.metrics import character_error_rate, word_error_rate
from avasr.train import fit

CHANCE_DRAWS = 20


def chance_level(train: AVDataset, test: AVDataset, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    refs = [u.transcript for u in test]
    pool = [u.transcript for u in train]
    draws = [[rng.choice(pool) for _ in refs] for _ in range(CHANCE_DRAWS)]
    return (
        sum(word_error_rate(refs, h) for h in draws) / CHANCE_DRAWS,
        sum(character_error_rate(refs, h) for h in draws) / CHANCE_DRAWS,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/corpus/smoke", help="folder with train/val/test_manifest.txt")
    parser.add_argument("--inputs", nargs="+", choices=MODALITIES, default=list(MODALITIES), help="which to train")
    add_config_arguments(parser)
    args = parser.parse_args()
    corpus = Path(args.corpus)
    base = config_from_args(args, Config(epochs=30, patience=30))
    base = base.replace(
        train_manifest=str(corpus / "train_manifest.txt"), val_manifest=str(corpus / "val_manifest.txt")
    )
    train, val = AVDataset.from_manifest(base.train_manifest, base), AVDataset.from_manifest(base.val_manifest, base)
    test = AVDataset.from_manifest(corpus / "test_manifest.txt", base)
    rows = []
    for modalities in args.inputs:
        with tempfile.TemporaryDirectory() as out:
            config = base.replace(modalities=modalities, output_dir=out)
            best = fit(config, datasets=(train, val))
            model, _ = load_model(Path(out) / BEST_CHECKPOINT, pick_device(config))
            result = evaluate(model, make_loader(test, config, shuffle=False), config, pick_device(config))
        rows.append((modalities, best["epoch"], best["val_cer"], result["cer"], result["wer"]))
        params = best["param_count"]
    chance_wer, chance_cer = chance_level(train, test, base.seed)
    print(
        f"\n{len(train)} train / {len(val)} val utterances; test: {len(test)} utterances of unseen speakers; "
        f"{base.fusion} fusion, {base.epochs} epochs max, {base.decoder} decoding, {params:,} parameters"
    )
    print(f"{'input':<12} {'best epoch':>10} {'val CER':>8} {'test CER':>9} {'test WER':>9}")
    for modalities, epoch, val_cer, cer, wer in rows:
        print(f"{modalities:<12} {epoch:>10} {val_cer:>8.3f} {cer:>9.3f} {wer:>9.3f}")
    print(f"{'chance':<12} {'':>10} {'':>8} {chance_cer:>9.3f} {chance_wer:>9.3f}   (random training transcripts)")


if __name__ == "__main__":
    main()
