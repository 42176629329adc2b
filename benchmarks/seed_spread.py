"""How far apart do a recipe's seeds land? Train each fusion with seeds --seed, --seed + 1, ... as a sweep trial with
one CPU does (one torch thread, `avasr.train.fit`, the space's fixed values; batches read in the training process),
without Ray, --jobs at a time, then print each seed's best val WER, the mean and the between-seed SD per fusion.
The verdict can only separate configurations whose difference is large against this SD, so a recipe whose seeds
agree makes every verdict cheaper.

    python benchmarks/seed_spread.py --corpus data/corpus/medium --seeds 5                # the smoke recipe
    python benchmarks/seed_spread.py --fusions simple attention --seeds 5 --lr 0.005      # any Config field

Results and the recipes tried: docs/benchmarks.md ("Seeds of the smoke recipe").
"""

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from avasr.config import FUSIONS, Config, add_config_arguments, config_from_args
from avasr.data.prepare import prepare
from avasr.sweep.spaces import fixed_values, load_space
from avasr.train import fit


def train_one(job: tuple[Config, int]) -> tuple[str, int, float, int]:
    """(config, seed) -> (fusion, seed, best val WER, best epoch), trained on one thread as a sweep trial is."""
    config, seed = job
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        best = fit(config.replace(seed=seed, output_dir=out))
    return config.fusion, seed, best["val_wer"], best["epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus/medium"), help="train/val manifests' folder")
    parser.add_argument("--space", default="smoke", help="the space whose fixed values are the recipe")
    parser.add_argument("--fusions", nargs="+", choices=FUSIONS, default=list(FUSIONS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per fusion")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time, one thread each")
    add_config_arguments(parser)  # any Config field overrides the space's recipe, e.g. --lr 0.005 --epochs 16
    args = parser.parse_args()
    recipe = Config.from_dict(
        {
            **fixed_values(load_space(args.space).space),
            "train_manifest": str(args.corpus / "train_manifest.txt"),
            "val_manifest": str(args.corpus / "val_manifest.txt"),
            "data_workers": 0,
        }
    )
    base = config_from_args(args, recipe)
    first = base.seed
    jobs = [(base.replace(fusion=f), first + i) for f in args.fusions for i in range(args.seeds)]
    start = time.perf_counter()
    prepare([base.train_manifest, base.val_manifest], base).check()  # the feature cache filled once, before training
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:  # not daemonic: fit may fork
        results = list(pool.map(train_one, jobs))
    minutes = (time.perf_counter() - start) / 60
    changed = {k: v for k, v in base.to_dict().items() if recipe.to_dict().get(k) != v and k not in ("fusion", "seed")}
    recipe_name = f"{args.space} recipe" + (f" with {changed}" if changed else "")
    print(f"\n{recipe_name}; {len(jobs)} trainings, {minutes:.1f} min")
    print(f"{'fusion':<10} {'val WER by seed ' + ','.join(str(first + i) for i in range(args.seeds)):<44} mean     SD")
    for fusion in args.fusions:
        wers = [w for f, _, w, _ in results if f == fusion]
        spread = statistics.stdev(wers) if len(wers) > 1 else float("nan")
        print(f"{fusion:<10} {' '.join(f'{w:.3f}' for w in wers):<44} {statistics.mean(wers):.3f} {spread:.3f}")


if __name__ == "__main__":
    main()
