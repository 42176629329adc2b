"""What does Ray cost? The same trials (the four fusions of the smoke model, fixed dropout and lr, E epochs each, no
early stopping) run by the plain loop (`avasr.train.fit`, one after another in this process, --cpus torch threads)
and through the sweep (`avasr.sweep.driver.run_sweep`, FIFO, MLflow tracking, no shipping) in two layouts:

- one trial at a time holding every CPU (--cpus torch threads): what Ray and MLflow add to a trial;
- the sweep's own layout, one CPU (one torch thread) per trial and --cpus trials side by side: what a user of
  `sweep_fusion.py` gets on this machine.

Both the plain loop and the sweep finalise every trial the same way (`avasr.sweep.champion.final_metrics`: ONNX export,
CPU latency, noisy WER), on the built-in smoke corpus with a warm feature cache. Prints the wall times, where the
time goes, and the ratios (goal: at most 1.25).

    python benchmarks/sweep_overhead.py [--epochs 30] [--cpus N] [--corpus data/corpus/smoke]

On a machine other jobs keep busy, pass --cpus 1: with two threads on a loaded 2-core machine the threads wait
for each other and an epoch of the plain loop takes many times longer, drowning what is measured here. The load
average is printed with the result: compare runs made under similar load.

Where the time goes is read off the runs themselves: every epoch's `seconds` (training + validation; metrics.csv
in the plain loop, `epoch/seconds` in MLflow for the sweep), MLflow's timestamps (a child run is created when its
trial's Tune function starts; each epoch is logged once its checkpoint is written) and the sweep's stages (its own
functions wrapped with a timer; nothing else changes).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from mlflow import MlflowClient

import avasr.sweep.driver
from avasr.config import FUSIONS, Config
from avasr.corpus.synth import build_corpus
from avasr.sweep.champion import final_metrics
from avasr.sweep.driver import SweepOptions, run_sweep
from avasr.sweep.spaces import fixed_values, load_space
from avasr.sweep.tracking import EPOCH_PREFIX, PARENT_TAG, read_metrics_csv
from avasr.train import METRICS_FILE, fit, load_datasets

SMOKE_CORPUS = "data/corpus/smoke"
DROPOUT, LR = 0.1, 2e-3  # fixed: trials differ by their fusion only
GOAL = 1.25
SWEEP_STAGES = ("open_parent_run", "warm_feature_cache", "run_tuner", "finalise_trial", "close_parent_run")
MS_PER_S = 1000.0


# --- the trials --------------------------------------------------------------------------------------------------
def trial_fields(epochs: int) -> dict:
    """The smoke space's model, one dropout and lr, exactly `epochs` epochs (patience never runs out)."""
    fields = fixed_values(load_space("smoke").space)
    return {**fields, "dropout": DROPOUT, "lr": LR, "epochs": epochs, "patience": epochs + 1}


def write_space(path: Path, fields: dict, fusions: list[str]) -> Path:
    path.write_text(f"from ray import tune\nSPACE = {{'fusion': tune.grid_search({fusions!r}), **{fields!r}}}\n")
    return path


def plain_config(options: SweepOptions, fields: dict, fusion: str, output_dir: Path) -> Config:
    """What a sweep trial of `fusion` trains (avasr.sweep.driver.base_trial_config), in a folder of its own."""
    return Config.from_dict(
        {
            **fields,
            "fusion": fusion,
            "train_manifest": options.train_manifest,
            "val_manifest": options.val_manifest,
            "cache_dir": options.cache_dir,
            "data_workers": 1,
            "seed": options.seed,
            "output_dir": str(output_dir),
        }
    )


@dataclass(frozen=True)
class TrialTimes:
    fusion: str
    startup_s: float  # plain: dataset load; Ray: Tune function started -> first epoch starts
    epoch_s: tuple[float, ...]  # training + validation of each epoch
    rest_s: float  # the trial's other time: checkpoints, reports, MLflow, model build

    @property
    def total_s(self) -> float:
        return self.startup_s + sum(self.epoch_s) + self.rest_s


# --- (a) the plain loop ------------------------------------------------------------------------------------------
def run_plain(configs: list[Config], threads: int) -> tuple[float, list[TrialTimes], float]:
    """Each trial trained, then finalised as the sweep's driver does (ONNX export, latency, noisy WER) without
    MLflow. Returns (wall, trials, seconds of finalising)."""
    torch.set_num_threads(threads)  # as a sweep worker does with its CPUs
    started, trials, finalise_s = time.perf_counter(), [], 0.0
    for config in configs:
        begin = time.perf_counter()
        datasets = load_datasets(config)
        loaded = time.perf_counter()
        fit(config, datasets=datasets)
        wall = time.perf_counter() - loaded
        output = Path(config.output_dir)
        rows = read_metrics_csv(output / METRICS_FILE)
        epochs = tuple(row["seconds"] for row in rows)
        trials.append(TrialTimes(config.fusion, loaded - begin, epochs, wall - sum(epochs)))
        finalising = time.perf_counter()
        final_metrics(output, rows, output / "model.onnx")
        finalise_s += time.perf_counter() - finalising
    return time.perf_counter() - started, trials, finalise_s


# --- (b) the sweep -----------------------------------------------------------------------------------------------
@contextmanager
def stage_timer(module, names: tuple[str, ...]) -> Iterator[dict[str, float]]:
    """Seconds spent in each named function of `module` while inside the block (the real functions run)."""
    totals: dict[str, float] = defaultdict(float)
    originals = {name: getattr(module, name) for name in names}

    def timed(name, function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - begin

        return call

    for name, function in originals.items():
        setattr(module, name, timed(name, function))
    try:
        yield totals
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def sweep_trial_times(client: MlflowClient, run) -> TrialTimes:
    """From MLflow: the child run's creation (its Tune function starting) and each epoch's logging time."""
    history = sorted(client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "seconds"), key=lambda m: m.step)
    epochs = tuple(m.value for m in history)
    first_epoch_start_s = history[0].timestamp / MS_PER_S - epochs[0]
    last_logged_s = history[-1].timestamp / MS_PER_S
    startup = first_epoch_start_s - run.info.start_time / MS_PER_S
    return TrialTimes(run.data.params["fusion"], startup, epochs, last_logged_s - first_epoch_start_s - sum(epochs))


@dataclass(frozen=True)
class SweepRun:
    layout: str
    wall_s: float
    stages: dict[str, float]
    trials: list[TrialTimes]


def run_ray(layout: str, options: SweepOptions, cpus: int) -> SweepRun:
    started = time.perf_counter()
    ray.init(num_cpus=cpus)  # what run_sweep does with no address, timed apart from the sweep
    stages = {"ray.init": time.perf_counter() - started}
    try:
        with stage_timer(avasr.sweep.driver, SWEEP_STAGES) as timed:
            result = run_sweep(options)
        stages |= timed
    finally:
        stopping = time.perf_counter()
        ray.shutdown()
        stages["ray.shutdown"] = time.perf_counter() - stopping
    wall = time.perf_counter() - started
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    return SweepRun(layout, wall, stages, [sweep_trial_times(client, run) for run in runs])


# --- the report --------------------------------------------------------------------------------------------------
def mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else math.nan


def break_even_epochs(plain_s: float, plain: list[TrialTimes], sweep: SweepRun, epochs: int) -> float:
    """Epochs per trial at which a one-at-a-time sweep's ratio would reach GOAL, keeping this run's fixed and
    per-epoch costs (trials side by side share the CPUs: their epochs are not additive, so no such line)."""
    n = len(plain)
    per_epoch_plain = sum(t.total_s - t.startup_s for t in plain) / (n * epochs)
    per_epoch_ray = sum(t.total_s - t.startup_s for t in sweep.trials) / (n * epochs)
    fixed_plain = plain_s / n - per_epoch_plain * epochs
    fixed_ray = sweep.wall_s / n - per_epoch_ray * epochs
    slack = GOAL * per_epoch_plain - per_epoch_ray
    return (fixed_ray - GOAL * fixed_plain) / slack if slack > 0 else math.inf


def column(value: float | str, unit: str = "s", digits: int = 1) -> str:
    return f"{value:>13}" if isinstance(value, str) else f"{value:>{13 - len(unit) - 1}.{digits}f} {unit}"


def report(
    epochs: int,
    cpus: int,
    plain_s: float,
    plain: list[TrialTimes],
    plain_finalise_s: float,
    sweeps: list[SweepRun],
    load: tuple[float, float],
) -> str:
    header = f"{'':<28}" + column("plain loop") + "".join(column(s.layout) for s in sweeps)
    lines = [
        f"{len(plain)} trials x {epochs} epochs of the smoke model on {cpus} CPU(s), feature cache warm; "
        f"load average {load[0]:.1f} before, {load[1]:.1f} after",
        "",
        header,
        f"{'wall time':<28}" + column(plain_s) + "".join(column(s.wall_s) for s in sweeps),
        f"  {'training (fit)':<26}" + column(plain_s - plain_finalise_s),
    ]
    for name in ("ray.init", *SWEEP_STAGES, "ray.shutdown"):
        first = column(plain_finalise_s) if name == "finalise_trial" else column("")
        lines.append(f"  {name:<26}" + first + "".join(column(s.stages.get(name, 0.0)) for s in sweeps))
    lines.append(
        f"  {'(rest of run_sweep)':<26}"
        + column("")
        + "".join(column(s.wall_s - sum(s.stages.values())) for s in sweeps)
    )
    lines += ["", "per trial (mean)"]
    every = [plain] + [s.trials for s in sweeps]
    for label, value, note in (
        ("start-up", lambda t: t.startup_s, "plain: dataset load; Ray: Tune function -> first epoch"),
        ("epochs", lambda t: sum(t.epoch_s), "training + validation"),
        ("other", lambda t: t.rest_s, "checkpoints, reports to Ray, MLflow"),
    ):
        lines.append(f"  {label:<26}" + "".join(column(mean(map(value, trials))) for trials in every) + f"   {note}")
    lines.append(
        f"  {'one epoch':<26}"
        + "".join(column(mean(e for t in trials for e in t.epoch_s), digits=2) for trials in every)
    )
    lines.append("")
    for sweep in sweeps:
        ratio, fits = sweep.wall_s / plain_s, sweep.stages["run_tuner"] / (plain_s - plain_finalise_s)
        lines.append(
            f"ratio {sweep.layout} / plain loop: {ratio:.2f} (goal <= {GOAL}); training alone "
            f"(Tuner.fit / the plain fits): {fits:.2f}"
        )
    break_even = break_even_epochs(plain_s, plain, sweeps[0], epochs)
    lines.append(
        "one at a time, at these costs: "
        + (
            f"an epoch through Ray costs more than {GOAL} plain ones"
            if not math.isfinite(break_even)
            else f"within {GOAL} at any number of epochs"
            if break_even < 1
            else f"within {GOAL} from about {break_even:.0f} epochs per trial"
        )
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=SMOKE_CORPUS, help="folder with train/val manifests (built if smoke)")
    parser.add_argument("--epochs", type=int, default=30, help="per trial (the smoke space's; its ASHA rung is 10)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="for Ray, and the threads of the plain loop")
    parser.add_argument("--fusions", nargs="+", choices=FUSIONS, default=list(FUSIONS))
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", help="keep the runs here (Ray's and MLflow's, for digging); default: a temp dir")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if corpus == Path(SMOKE_CORPUS):
        build_corpus(corpus, size="smoke", seed=args.seed)  # returns at once when built
    keep = args.work_dir and Path(args.work_dir).resolve()
    with nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="sweep-overhead-") as tmp:
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fields = trial_fields(args.epochs)
        options = SweepOptions(
            train_manifest=str((corpus / "train_manifest.txt").resolve()),
            val_manifest=str((corpus / "val_manifest.txt").resolve()),
            space=str(write_space(work / "space.py", fields, args.fusions)),
            name="one-at-a-time",
            storage_path=str(work / "sweeps"),
            mlflow_uri=f"sqlite:///{work / 'mlflow.db'}",
            cache_dir=str(Path(args.cache_dir).resolve()),
            cpus_per_trial=float(args.cpus),
            scheduler="fifo",
            seed=args.seed,
            ship=False,
            max_failures=0,
        )
        configs = [plain_config(options, fields, f, work / "plain" / f) for f in args.fusions]
        load_datasets(configs[0].replace(data_workers=0))  # warm the cache (all cores) outside both timings
        load_before = os.getloadavg()[0]
        plain_s, plain, plain_finalise_s = run_plain(configs, args.cpus)
        sweeps = [run_ray("1 at a time", options, args.cpus)]
        if args.cpus > 1:  # the sweep's own layout: one CPU (one torch thread) per trial, trials side by side
            side_by_side = SweepOptions(**{**options.__dict__, "name": "side-by-side", "cpus_per_trial": 1.0})
            sweeps.append(run_ray(f"{args.cpus} at a time", side_by_side, args.cpus))
    print()
    print(report(args.epochs, args.cpus, plain_s, plain, plain_finalise_s, sweeps, (load_before, os.getloadavg()[0])))


if __name__ == "__main__":
    main()
