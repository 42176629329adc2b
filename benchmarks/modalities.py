"""Do the lips carry information, and how far does each input generalise? Train the same model on audio only,
video only and both, then print WER (and CER) on every split of the corpus: val (seen voices and faces), then each
test split the built-in corpus writes (unseen voices, unseen faces, a held-out speech engine with held-out faces),
beside a chance level: random training transcripts used as hypotheses (they follow the same grammar, so they share
many words with the references). The last column is the hardest split's WER over val's.

    python benchmarks/modalities.py [--corpus data/corpus/medium] [--epochs 30] [--decoder beam]
    # any Config field is a flag, e.g. the smoke sweep's small model:
    python benchmarks/modalities.py --feature-dim 128 --encoder-channels 8 16 32 --lip-size 32 --temporal-layers 2

A corpus without corpus.json (an imported one) is measured on val_manifest.txt and test_manifest.txt.
"""

import argparse
import random
import tempfile
from pathlib import Path

from avasr.checkpoint import BEST_CHECKPOINT, load_model
from avasr.config import MODALITIES, Config, add_config_arguments, config_from_args
from avasr.corpus.splits import HARDEST, SHORT_NAMES, VAL, evaluation_splits
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


def format_table(rows: list[tuple[str, str, dict[str, tuple[float, float]]]], splits: list[str]) -> str:
    """rows: (input, best epoch, split -> (WER, CER)) -> a text table: WER (CER) per split, and test/val."""
    names = [SHORT_NAMES.get(s, s) for s in splits]
    lines = [f"{'input':<12} {'epoch':>5} " + " ".join(f"{n + ' WER (CER)':>22}" for n in names) + "  test/val"]
    for name, epoch, scores in rows:
        cells = " ".join(f"{scores[s][0]:>13.3f} ({scores[s][1]:.3f})" for s in splits)
        ratio = scores[HARDEST][0] / scores[VAL][0] if scores[VAL][0] > 0 else float("inf")
        lines.append(f"{name:<12} {epoch:>5} {cells} {ratio:>9.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/corpus/medium", help="a corpus folder (train_manifest.txt, ...)")
    parser.add_argument("--inputs", nargs="+", choices=MODALITIES, default=list(MODALITIES), help="which to train")
    add_config_arguments(parser)
    args = parser.parse_args()
    corpus = Path(args.corpus)
    base = config_from_args(args, Config(epochs=30, patience=30))
    base = base.replace(
        train_manifest=str(corpus / "train_manifest.txt"), val_manifest=str(corpus / "val_manifest.txt")
    )
    train = AVDataset.from_manifest(base.train_manifest, base, keep_speech=base.noise_prob > 0)  # noise is mixed in
    sets = {name: AVDataset.from_manifest(path, base) for name, path in evaluation_splits(corpus).items()}
    device = pick_device(base)
    rows = []
    for modalities in args.inputs:
        with tempfile.TemporaryDirectory() as out:
            config = base.replace(modalities=modalities, output_dir=out)
            best = fit(config, datasets=(train, sets[VAL]))
            model, _ = load_model(Path(out) / BEST_CHECKPOINT, device)
            scores = {}
            for name, data in sets.items():
                result = evaluate(model, make_loader(data, config, shuffle=False), config, device)
                scores[name] = (result["wer"], result["cer"])
        rows.append((modalities, str(best["epoch"]), scores))
        params = best["param_count"]
    rows.append(("chance", "", {name: chance_level(train, data, base.seed) for name, data in sets.items()}))
    sizes = ", ".join(f"{SHORT_NAMES.get(n, n)} {len(d)}" for n, d in sets.items())
    print(
        f"\n{len(train)} train utterances; {sizes}; {base.fusion} fusion, {base.epochs} epochs max, "
        f"{base.decoder} decoding, {params:,} parameters"
    )
    print(format_table(rows, list(sets)))


if __name__ == "__main__":
    main()
