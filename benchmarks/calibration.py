"""How far the verdict's statistics can be trusted: the calibration table of avasr.sweep.significance, measured on
simulated sweeps with a known truth (avasr.sweep.simulation), and the racing replay table of avasr.sweep.racing.

    python benchmarks/calibration.py                          # calibration, and racing on simulated recordings
    python benchmarks/calibration.py --recorded sweep.npz     # and racing replayed on a recorded sweep
    python benchmarks/calibration.py --sweeps 500             # quicker, with wider Monte Carlo error

Calibration, every row over --sweeps simulated sweeps (val set: 24 speakers x 10 utterances of 4-8 words; true WER
0.15, speakers' SD 0.05; seed SD as the row says):
    coverage       share of 95 % intervals holding the true expected WER (with 1 seed: that seed's model's), and
                   the shares of truths below and above the interval
    A/A            share of paired comparisons of two equal configurations with p < 0.05, their models trained with
                   one seed independent or alike (seed correlation)
    family         share of sweeps of four equal configurations in which compare_to_best calls one significantly
                   worse, with Holm over every pair (the default) and over the comparisons with the best alone
    power          share of comparisons finding a real difference at p < 0.05; "oracle" is a z-test that knows the
                   true SD of the difference, the most any test on the same data could reach; "measured seed SD" is
                   the between-seed SD of val WER a sweep would see on its one val set (seed SD plus each model's
                   own noise on the val set's 1,440 words)
    detectable     the difference a tie can hide: equal configurations' comparisons' mean `detectable`, and the
                   share of sweeps finding a real difference of that size ("found"; the test's 80 % power)

With --recorded, first the power for a 2-point difference with 3 seeds at each recorded pair of configurations'
measured spreads (simulation.measure: WER, speaker SD, seed SD beyond each model's own noise, that noise; and
simulation.seed_correlation: how much of their between-seed variance the two share, since one seed fixes the batch
order of both): the verdict's test (seeds pooled) on the recorded val set and on one with 3 times its utterances
per speaker, and the test with the seeds paired ("paired", recorded val set). "SD of a-b" is the recorded per-seed
differences' SD, "simulated" the same in simulated sweeps at those spreads.

Racing, over --replays seed orders: how often the race's verdict (the configurations left) equals the full-repeat
sweep's (those not significantly worse with every seed), and the share of its trials the race used; per policy:
Holm over every pair, over the comparisons with the best, and over every pair with a budget of 60 % of the trials.

A recorded sweep (--recorded) is an .npz file as avasr.sweep.racing writes it (save_recording):
    configs   shape = (C,)       str: configuration names
    errors    shape = (C, S, U)  int: word errors of configuration c's model trained with seed s, on utterance u
    words     shape = (U,)       int: reference words of each utterance
    speakers  shape = (U,)       str: speaker of each utterance
    seeds     shape = (S,)       int: the training seeds
"""

import argparse
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from avasr.sweep.racing import Policy, load_recording, replays, seed_count
from avasr.sweep.significance import Scores, pairs
from avasr.sweep.simulation import (
    Design,
    Measured,
    Population,
    coverage,
    detectable_power,
    family_error_rate,
    measure,
    measured_seed_sd,
    rejections,
    seed_correlation,
    simulate,
    with_noise,
)

SEED_SDS = (0.0, 0.0125, 0.03)
SEED_CORRELATIONS = (0.0, 0.9)  # how alike two configurations' models trained with the same seed are
POWER_SEED_SDS = (0.0, 0.005, 0.01, 0.0125, 0.015, 0.02, 0.03, 0.05)
DIFFERENCES = (0.02, 0.03, 0.04, 0.05)
VAL_SCALES = (1, 3)  # val sets of the recorded one's utterances per speaker times these
BUDGET_SHARE = 0.6  # the racing goal: the full-repeat verdict with at most this share of its trials
FUSIONS = {  # one fresh-clone `make sweep`'s val WERs, as true WERs of a simulated full-repeat sweep
    "attention": Population(wer=0.130),
    "adaptive": Population(wer=0.158),
    "weighted": Population(wer=0.172),
    "simple": Population(wer=0.238),
}


def coverage_table(sweeps: int) -> list[str]:
    lines = ["coverage of the 95 % interval", f"{'seed SD':>8} {'seeds':>5} {'coverage':>8} {'below':>6} {'above':>6}"]
    for sd in SEED_SDS:
        for seeds in (1, 2, 3, 5):
            c = coverage(Population(seed_sd=sd), seeds, sweeps, rng=1000 + seeds)
            lines.append(f"{sd:>8.4f} {seeds:>5} {c.rate:>8.3f} {c.below:>6.3f} {c.above:>6.3f}")
    return lines


def false_positive_table(sweeps: int) -> list[str]:
    lines = [
        "A/A: equal configurations called different at alpha 0.05",
        f"{'seed SD':>8} {'seeds':>5} " + " ".join(f"{f'corr {c:g}':>9}" for c in SEED_CORRELATIONS),
    ]
    for sd in SEED_SDS:
        for seeds in (2, 3, 5):
            population = Population(seed_sd=sd)
            rates = [
                rejections(population, population, seeds, sweeps, rng=2000 + seeds, seed_correlation=c).rate
                for c in SEED_CORRELATIONS
            ]
            lines.append(f"{sd:>8.4f} {seeds:>5} " + " ".join(f"{r:>9.3f}" for r in rates))
    return lines


def family_table(sweeps: int) -> list[str]:
    lines = [
        "family: four equal configurations, 3 seeds, any called significantly worse than the best",
        f"{'seed SD':>8} {'Holm over pairs':>15} {'over best':>9}",
    ]
    for sd in SEED_SDS[1:]:
        rates = [family_error_rate(Population(seed_sd=sd), 4, 3, sweeps, rng=3000, family=f) for f in ("pairs", "best")]
        lines.append(f"{sd:>8.4f} {rates[0]:>15.3f} {rates[1]:>9.3f}")
    return lines


def power_table(sweeps: int) -> list[str]:
    lines = [
        "power for a 2-point difference (0.15 against 0.17) over the seed SD",
        f"{'seed SD':>8} {'seeds':>5} {'measured seed SD':>16} {'power':>6} {'oracle':>6}",
    ]
    for seeds in (3, 5, 8):
        for sd in POWER_SEED_SDS:
            a, b = Population(seed_sd=sd), Population(wer=0.17, seed_sd=sd)
            r = rejections(a, b, seeds, sweeps, rng=4000 + seeds)
            measured = measured_seed_sd(a, seeds, max(sweeps // 4, 50), rng=5000)
            lines.append(f"{sd:>8.4f} {seeds:>5} {measured:>16.4f} {r.rate:>6.3f} {r.oracle:>6.3f}")
    return lines


def difference_table(sweeps: int, seed_sd: float = 0.0125) -> list[str]:
    lines = [f"power over the difference, seed SD {seed_sd}", f"{'diff':>5} {'seeds':>5} {'power':>6} {'oracle':>6}"]
    for seeds in (3, 5):
        for difference in DIFFERENCES:
            a, b = Population(seed_sd=seed_sd), Population(wer=0.15 + difference, seed_sd=seed_sd)
            r = rejections(a, b, seeds, sweeps, rng=6000 + seeds)
            lines.append(f"{difference:>5.2f} {seeds:>5} {r.rate:>6.3f} {r.oracle:>6.3f}")
    return lines


def detectable_table(sweeps: int, seed_sd: float = 0.0125) -> list[str]:
    """The difference a tie can hide (Comparison.detectable), averaged over comparisons of equal configurations,
    and how often a real difference of that size is found: the POWER it stands for."""
    lines = [
        f"the detectable difference (80 % power), seed SD {seed_sd}",
        f"{'seeds':>5} {'detectable':>10} {'found':>6} {'oracle':>6}",
    ]
    for seeds in (2, 3, 5, 8):
        detectable, r = detectable_power(Population(seed_sd=seed_sd), seeds, sweeps, rng=7000 + seeds)
        lines.append(f"{seeds:>5} {detectable:>10.4f} {r.rate:>6.3f} {r.oracle:>6.3f}")
    return lines


def measured_power_table(recorded: dict[str, Scores], sweeps: int, seeds: int = 3) -> list[str]:
    """Power for a 2-point difference at each recorded pair of configurations' measured spreads (`measure`: WER,
    speaker SD, seed SD beyond each model's own noise, that noise; `seed_correlation`: how much of it the pair
    shares): seeds paired on the recorded val set, pooled on it and on val sets with VAL_SCALES times the
    utterances per speaker."""
    lines = [
        f"power for a 2-point difference, {seeds} seeds, at each recorded pair's measured spreads",
        f"{'pair':<22} {'WER':>5} {'speaker SD':>10} {'seed SD':>7} {'own noise':>9} {'seed corr':>9} "
        f"{'SD of a-b':>9} {'simulated':>9} {'paired':>6} "
        + " ".join(f"{f'x{k} val':>7} {'oracle':>6}" for k in VAL_SCALES),
    ]
    measured = {name: measure(scores) for name, scores in recorded.items()}
    for x, y in pairs(list(recorded)):
        population, design, noise = pooled(measured[x], measured[y])
        correlation = seed_correlation(recorded[x], recorded[y])
        differences = recorded[x].seed_wers - recorded[y].seed_wers
        simulated = [
            simulate({"a": population, "b": population}, 5, design, rng, correlation).scores
            for rng in range(100, 100 + max(sweeps // 10, 20))
        ]
        simulated_sd = np.sqrt(np.mean([(s["a"].seed_wers - s["b"].seed_wers).var(ddof=1) for s in simulated]))
        better = replace(population, wer=population.wer + 0.02)
        paired = rejections(
            population, better, seeds, sweeps, design, rng=9000, seed_correlation=correlation, paired=True
        )
        cells = [f"{paired.rate:>6.3f}"]
        for k in VAL_SCALES:
            scaled = replace(design, utterances_per_speaker=design.utterances_per_speaker * k)
            r = rejections(population, better, seeds, sweeps, scaled, rng=9000 + k, seed_correlation=correlation)
            cells.append(f"{r.rate:>7.3f} {r.oracle:>6.3f}")
        lines.append(
            f"{x + ' - ' + y:<22} {population.wer:>5.3f} {population.speaker_sd:>10.4f} {population.seed_sd:>7.4f} "
            f"{noise:>9.4f} {correlation:>9.3f} {differences.std(ddof=1):>9.4f} {simulated_sd:>9.4f} " + " ".join(cells)
        )
    return lines


def pooled(x: Measured, y: Measured) -> tuple[Population, Design, float]:
    """One population for a pair: the mean WER, the root mean squares of the spreads, the first's design."""

    def rms(a: float, b: float) -> float:
        return float(np.sqrt((a**2 + b**2) / 2))

    noise = rms(x.noise_sd, y.noise_sd)
    population = Population(
        wer=(x.population.wer + y.population.wer) / 2,
        speaker_sd=rms(x.population.speaker_sd, y.population.speaker_sd),
        seed_sd=rms(x.population.seed_sd, y.population.seed_sd),
    )
    return with_noise(population, x.design, noise), x.design, noise


def replay_line(label: str, recorded: dict[str, Scores], count: int, policy: Policy, rng: int) -> str:
    results = replays(recorded, count, policy, rng)
    agreement = np.mean([r.agrees_with_full for r in results])
    used = np.mean([r.trials_used / r.trials_full for r in results])
    verdicts = Counter("+".join(sorted(r.verdict)) for r in results).most_common(2)
    full = "+".join(sorted(results[0].full_verdict))
    return f"{label:<40} {agreement:>9.3f} {used:>11.3f}   full: {full}; race: {verdicts}"


def racing_table(recordings: dict[str, dict[str, Scores]], count: int) -> list[str]:
    lines = [
        f"racing replays ({count} seed orders each)",
        f"{'recording, policy':<40} {'agreement':>9} {'trials used':>11}",
    ]
    for label, recorded in recordings.items():
        seeds = seed_count(recorded)
        budget = int(BUDGET_SHARE * seeds * len(recorded))
        policies = {
            "pairs": Policy(max_seeds=seeds),
            "best": Policy(max_seeds=seeds, family="best"),
            f"pairs, <= {budget} trials": Policy(max_seeds=seeds, max_trials=budget),
        }
        for name, policy in policies.items():
            lines.append(replay_line(f"{label}, {name}", recorded, count, policy, rng=7000))
    return lines


def simulated_recordings(count: int, seeds: int, seed_sd: float) -> dict[str, dict[str, Scores]]:
    populations = {name: Population(wer=p.wer, seed_sd=seed_sd) for name, p in FUSIONS.items()}
    return {
        f"simulated {i} (sd {seed_sd})": simulate(populations, seeds, Design(), rng=8000 + i).scores
        for i in range(count)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweeps", type=int, default=2000, help="simulated sweeps per calibration row")
    parser.add_argument("--replays", type=int, default=200, help="seed orders per racing row")
    parser.add_argument("--recorded", type=Path, help="a recorded full-repeat sweep (.npz) to replay racing on")
    args = parser.parse_args()
    started = time.perf_counter()
    tables = [coverage_table, false_positive_table, family_table, power_table, difference_table, detectable_table]
    for table in tables:
        print("\n".join(table(args.sweeps)), end="\n\n", flush=True)
    recordings = simulated_recordings(3, seeds=5, seed_sd=0.0125)
    if args.recorded is not None:
        recorded = load_recording(args.recorded)[0]
        print("\n".join(measured_power_table(recorded, args.sweeps)), end="\n\n", flush=True)
        recordings = {args.recorded.name: recorded, **recordings}
    print("\n".join(racing_table(recordings, args.replays)))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
