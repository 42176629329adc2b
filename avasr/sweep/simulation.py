"""Synthetic sweeps with a known truth: per-utterance word errors of several configurations, each trained with
several seeds, on one set of speakers and utterances. They calibrate avasr.sweep.significance by simulation (its
tests, benchmarks/calibration.py) and exercise racing (avasr.sweep.racing) without training anything.

The model, on the logit scale of a word's error probability, for utterance u of speaker k decoded by the model that
seed s of configuration c trained:

    logit p[c, s, u, j] = mu[c] + speaker[c] * b[k] + utterance * d[u] + word * h[u, j]
                          + seed[c] * a[c, s] + interaction * g[c, s, k]
    errors[c, s, u] = sum over the words j of utterance u of Bernoulli(p[c, s, u, j])

with b, d, h, a, g independent standard normals. b, d and h are shared by every configuration (all are scored on
the same utterances, and a hard speaker, utterance or word is hard for all of them); a (the seed's luck) and g (the
seed's model suits some speakers better than others) belong to each trained model. What the shared effects leave
to chance, each model's own draw of which words it gets wrong, is the noise that makes two seeds of one
configuration differ on a fixed val set even where the seeds' expected WERs are equal.

The estimand, `Population.wer`, is a configuration's expected WER: E[p] over speakers, utterances and seeds, the
corpus WER of infinitely many new speakers decoded by infinitely many retrained models. A Population states it on
the WER scale with two spreads, also on the WER scale and exact: `speaker_sd` is the SD over speakers of a speaker's
expected WER, `seed_sd` the SD over seeds of a trained model's expected WER. Their logit-scale coefficients are
solved for (`logit_model`): each quantity is a Gaussian integral, computed by Gauss-Hermite quadrature.

A training seed fixes the batch order and the draws of every configuration alike: `simulate`'s seed_correlation
mixes shared draws into each model's seed effect, seed x speaker effects and word draws (0: every trained model
independent). `measure` and `seed_correlation` read a Population, a Design and a seed correlation off real scores,
so that the calibration can be run at the spreads a recorded sweep measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import stats
from scipy.optimize import brentq
from scipy.special import expit

from avasr.sweep.significance import (
    Scores,
    SignificanceError,
    compare,
    compare_to_best,
    paired_seeds,
    seed_noise,
    speaker_table,
    wer_interval,
)

QUADRATURE_NODES = 64  # Gauss-Hermite nodes: the integrals below are within 1e-6 for logit spreads up to 3.3
SOLVER_STEPS = 50
SOLVER_TOLERANCE = 1e-10
MAX_SEED_CORRELATION = 0.999  # simulate takes correlations below 1: a configuration keeps some draws of its own
MAX_WORD_SPREAD = 4.0  # logit SD: with the other spreads, integrals within 2e-5 (1e-6 up to a total of 3.3)


@dataclass(frozen=True)
class Population:
    """One configuration's population of errors; see the module docstring. `utterance`, `word` and `interaction` are
    logit-scale SDs (a difficulty spread of 1.0 over utterances makes most of them nearly always right and a few
    often wrong, as in ASR; a spread over words makes every model trip over the same words)."""

    wer: float = 0.15
    speaker_sd: float = 0.05
    seed_sd: float = 0.0125
    utterance: float = 1.0
    word: float = 0.0
    interaction: float = 0.1


@dataclass(frozen=True)
class Design:
    """The val set: `speakers` speakers of `utterances_per_speaker` utterances each, every utterance's reference
    words drawn uniformly from `words` (inclusive) once per simulated sweep."""

    speakers: int = 24
    utterances_per_speaker: int = 10
    words: tuple[int, int] = (4, 8)

    @property
    def utterances(self) -> int:
        return self.speakers * self.utterances_per_speaker


@dataclass(frozen=True)
class LogitModel:
    """A Population's coefficients on the logit scale (see the module docstring)."""

    mu: float
    speaker: float
    utterance: float
    word: float
    seed: float
    interaction: float


@dataclass(frozen=True)
class Sweep:
    """One simulated sweep: each configuration's Scores, its true expected WER, and each of its seeds' true
    expected WER (of that seed's model over new speakers and utterances) shape = (S,)."""

    scores: dict[str, Scores]
    truth: dict[str, float]
    seed_truth: dict[str, np.ndarray]


@lru_cache(maxsize=1)
def gauss_hermite() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[f(Z)], Z standard normal: E[f(Z)] ~= sum(weights * f(nodes))."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
    return nodes, weights / weights.sum()


def mean_rate(centre: np.ndarray | float, sd: float) -> np.ndarray:
    """E[expit(centre + sd * Z)], Z standard normal, for each centre."""
    nodes, weights = gauss_hermite()
    return expit(np.asarray(centre, float)[..., None] + sd * nodes) @ weights


def effect_sd(mu: float, scale: float, rest: float) -> float:
    """SD over X of E[expit(mu + scale * X + rest * Z) | X], X and Z standard normals: the spread of a group's
    expected WER when the group's effect has logit scale `scale` and everything else adds up to `rest`."""
    nodes, weights = gauss_hermite()
    group = mean_rate(mu + scale * nodes, rest)
    mean = group @ weights
    return float(np.sqrt(max(((group - mean) ** 2) @ weights, 0.0)))


def spread(*sds: float) -> float:
    """The SD of a sum of independent normal effects."""
    return float(np.sqrt(sum(sd**2 for sd in sds)))


def solve_mu(wer: float, total: float) -> float:
    """The logit centre whose E[expit(mu + total * Z)] is `wer`."""
    return brentq(lambda mu: float(mean_rate(mu, total)) - wer, -30.0, 30.0, xtol=1e-14)


@lru_cache(maxsize=256)
def logit_model(population: Population) -> LogitModel:
    """Solve for the logit-scale coefficients that give the population's WER and its speaker and seed SDs exactly
    (a fixed point: each SD rescales its coefficient, mu follows from the WER; it converges in a few steps)."""
    p = population
    if not 0.0 < p.wer < 1.0:
        raise ValueError(f"a population's WER must lie in (0, 1), not {p.wer}")
    shared = spread(p.utterance, p.word, p.interaction)  # the effects whose SDs are given on the logit scale
    slope = p.wer * (1.0 - p.wer)
    speaker, seed = p.speaker_sd / slope, p.seed_sd / slope
    for _ in range(SOLVER_STEPS):
        mu = solve_mu(p.wer, spread(speaker, seed, shared))
        new_speaker = rescaled(speaker, p.speaker_sd, effect_sd(mu, speaker, spread(seed, shared)))
        new_seed = rescaled(seed, p.seed_sd, effect_sd(mu, seed, spread(speaker, shared)))
        converged = abs(new_speaker - speaker) + abs(new_seed - seed) < SOLVER_TOLERANCE
        speaker, seed = new_speaker, new_seed
        if converged:
            break
    mu = solve_mu(p.wer, spread(speaker, seed, shared))
    return LogitModel(mu, speaker, p.utterance, p.word, seed, p.interaction)


def rescaled(coefficient: float, target_sd: float, achieved_sd: float) -> float:
    return 0.0 if target_sd == 0.0 else coefficient * target_sd / achieved_sd


def seed_truths(model: LogitModel, seed_effects: np.ndarray) -> np.ndarray:
    """Each seed's model's expected WER over new speakers and utterances, given its seed effects a shape = (S,)."""
    rest = spread(model.speaker, model.utterance, model.word, model.interaction)
    return mean_rate(model.mu + model.seed * seed_effects, rest)


def val_set(design: Design, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """words shape = (U,), speakers (each utterance's speaker index) shape = (U,), and the shared standard normal
    effects b shape = (K,), d shape = (U,), h shape = (U, most words) (NaN past an utterance's last word)."""
    low, high = design.words
    words = rng.integers(low, high + 1, size=design.utterances)
    speakers = np.repeat(np.arange(design.speakers), design.utterances_per_speaker)
    h = rng.standard_normal((design.utterances, high))
    h[np.arange(high) >= words[:, None]] = np.nan
    return words, speakers, rng.standard_normal(design.speakers), rng.standard_normal(design.utterances), h


@dataclass(frozen=True)
class SeedDraws:
    """What one training seed gives every configuration alike (the batch order, the augmentation draws, part of
    the initialisation): standard normals for the seed effects a shape = (S,), the seed x speaker effects g shape =
    (S, K), and the word draws z shape = (S, U, most words). A configuration's own draws mix with them at the
    sweep's seed correlation."""

    a: np.ndarray
    g: np.ndarray
    z: np.ndarray


def seed_draws(seeds: int, val: tuple[np.ndarray, ...], rng: np.random.Generator) -> SeedDraws:
    _, _, b, _, h = val
    return SeedDraws(
        rng.standard_normal(seeds), rng.standard_normal((seeds, len(b))), rng.standard_normal((seeds, *h.shape))
    )


def word_errors(
    model: LogitModel,
    seeds: int,
    val: tuple[np.ndarray, ...],
    rng: np.random.Generator,
    shared: SeedDraws | None = None,
    correlation: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each seed's errors on each utterance shape = (S, U), and the seeds' effects a shape = (S,). With `shared`
    draws, each of the model's seed effect, seed x speaker effects and word draws (by a Gaussian copula) has
    correlation `correlation` with another configuration's trained with the same seed."""
    words, speakers, b, d, h = val
    a = rng.standard_normal(seeds)
    g = rng.standard_normal((seeds, len(b)))
    if shared is not None:
        a, g = mixed(shared.a, a, correlation), mixed(shared.g, g, correlation)
    utterance = model.mu + model.speaker * b[speakers] + model.utterance * d + model.interaction * g[:, speakers]
    logit = (utterance + model.seed * a[:, None])[..., None] + model.word * h
    if shared is None:
        uniforms = rng.random(logit.shape)
    else:
        uniforms = stats.norm.cdf(mixed(shared.z, rng.standard_normal(logit.shape), correlation))
    wrong = uniforms < expit(logit)  # NaN past the last word: never wrong
    return wrong.sum(axis=-1), a


def mixed(shared: np.ndarray, own: np.ndarray, correlation: float) -> np.ndarray:
    """Standard normals with `correlation` to any other mix of the same shared draws."""
    return np.sqrt(correlation) * shared + np.sqrt(1.0 - correlation) * own


def simulate(
    populations: dict[str, Population],
    seeds: int,
    design: Design = Design(),
    rng: np.random.Generator | None = None,
    seed_correlation: float = 0.0,
) -> Sweep:
    """One sweep: every configuration trained with `seeds` seeds (ids 0, 1, ...) and scored on one freshly drawn val
    set. `seed_correlation`: how alike two configurations' models trained with the same seed are (their seed
    effects, seed x speaker effects and word draws); 0 makes every trained model independent."""
    if not 0.0 <= seed_correlation < 1.0:
        raise ValueError(f"seed_correlation must lie in [0, 1), not {seed_correlation}")
    rng = np.random.default_rng(rng)
    val = val_set(design, rng)
    shared = seed_draws(seeds, val, rng) if seed_correlation > 0.0 else None
    scores, truth, seed_truth = {}, {}, {}
    for name, population in populations.items():
        model = logit_model(population)
        errors, a = word_errors(model, seeds, val, rng, shared, seed_correlation)
        scores[name] = Scores(errors=errors, words=val[0], speakers=val[1], seed_ids=np.arange(seeds))
        truth[name] = population.wer
        seed_truth[name] = seed_truths(model, a)
    return Sweep(scores, truth, seed_truth)


@dataclass(frozen=True)
class Coverage:
    """How often the interval held the truth, and how often the truth lay below it or above it."""

    rate: float
    below: float
    above: float


@dataclass(frozen=True)
class Rejections:
    """How often the paired test rejected at alpha, and how often a z-test that knew the true SD of the estimated
    difference (its SD over the simulated sweeps) would have: the most any test on these data could reach."""

    rate: float
    oracle: float


def coverage(
    population: Population,
    seeds: int,
    sweeps: int,
    design: Design = Design(),
    level: float = 0.95,
    resamples: int = 1000,
    rng: np.random.Generator | int | None = None,
) -> Coverage:
    """The share of simulated sweeps whose `wer_interval` holds the truth. With two seeds or more the truth is the
    population's expected WER; with one, the expected WER of that one seed's model (over new speakers and
    utterances), since one seed cannot measure seed-to-seed variation."""
    rng = np.random.default_rng(rng)
    below = above = 0
    for _ in range(sweeps):
        sweep = simulate({"a": population}, seeds, design, rng)
        truth = sweep.truth["a"] if seeds > 1 else float(sweep.seed_truth["a"][0])
        interval = wer_interval(sweep.scores["a"], level, resamples, rng)
        below += truth < interval.low
        above += truth > interval.high
    return Coverage(1.0 - (below + above) / sweeps, below / sweeps, above / sweeps)


def rejections(
    a: Population,
    b: Population,
    seeds: int,
    sweeps: int,
    design: Design = Design(),
    alpha: float = 0.05,
    resamples: int = 1000,
    rng: np.random.Generator | int | None = None,
    seed_correlation: float = 0.0,
    paired: bool = False,
) -> Rejections:
    """The share of simulated sweeps in which `compare` finds a and b different at alpha: the false-positive rate
    where they are equal, the power where they are not. `paired`: compare the seeds seed by seed."""
    rng = np.random.default_rng(rng)
    differences, rejected = [], 0
    for _ in range(sweeps):
        sweep = simulate({"a": a, "b": b}, seeds, design, rng, seed_correlation)
        comparison = compare(sweep.scores["a"], sweep.scores["b"], resamples=resamples, rng=rng, paired=paired)
        rejected += comparison.p_value < alpha
        differences.append(comparison.difference)
    differences = np.asarray(differences)
    z = stats.norm.ppf(1 - alpha / 2)
    oracle = float(np.mean(np.abs(differences) > z * differences.std()))
    return Rejections(rejected / sweeps, oracle)


def detectable_power(
    population: Population,
    seeds: int,
    sweeps: int,
    design: Design = Design(),
    resamples: int = 1000,
    rng: np.random.Generator | int | None = None,
) -> tuple[float, Rejections]:
    """What a tie can hide, and how often it is found: the mean `detectable` difference of `compare` over sweeps//4
    comparisons of two configurations equal to `population`, then `rejections` of a real difference of that size."""
    rng = np.random.default_rng(rng)
    pair = {"a": population, "b": population}
    equal = [simulate(pair, seeds, design, rng).scores for _ in range(max(sweeps // 4, 1))]
    detectable = float(np.mean([compare(s["a"], s["b"], resamples=resamples, rng=rng).detectable for s in equal]))
    real = replace(population, wer=population.wer + detectable)
    return detectable, rejections(population, real, seeds, sweeps, design, resamples=resamples, rng=rng)


def family_error_rate(
    population: Population,
    configs: int,
    seeds: int,
    sweeps: int,
    design: Design = Design(),
    alpha: float = 0.05,
    resamples: int = 1000,
    rng: np.random.Generator | int | None = None,
    family: str = "pairs",
    seed_correlation: float = 0.0,
) -> float:
    """The share of simulated sweeps of `configs` equal configurations in which `compare_to_best` (Holm over
    `family`) calls any of them significantly worse than the best (the best itself chosen by the data)."""
    rng = np.random.default_rng(rng)
    names = {f"c{i}": population for i in range(configs)}
    wrong = 0
    for _ in range(sweeps):
        configs = simulate(names, seeds, design, rng, seed_correlation).scores
        rows = compare_to_best(configs, alpha, resamples=resamples, rng=rng, family=family)
        wrong += any(row.significantly_worse for row in rows)
    return wrong / sweeps


def measured_seed_sd(
    population: Population,
    seeds: int,
    sweeps: int,
    design: Design = Design(),
    rng: np.random.Generator | int | None = None,
) -> float:
    """The between-seed SD of val WER as a sweep measures it, on one fixed val set (the root of the mean sample
    variance over sweeps): the population's seed SD plus each model's own noise on that val set."""
    rng = np.random.default_rng(rng)
    variances = [
        simulate({"a": population}, seeds, design, rng).scores["a"].seed_wers.var(ddof=1) for _ in range(sweeps)
    ]
    return float(np.sqrt(np.mean(variances)))


@dataclass(frozen=True)
class Measured:
    """What one configuration's scores on a real val set say about its population and the val set's design, by the
    method of moments (each spread with the sampling noise of its estimate taken out, never below zero):

    population  its WER, its speakers' SD (of a speaker's expected WER), its seeds' SD (of a trained model's
                expected WER), and a shared word difficulty (`word`) that gives each model as much noise of its own
                as measured: real models trip over the same words more than independent draws would
    design      the val set: speakers, utterances per speaker, the range of words per utterance
    seed_wer_sd the between-seed SD of val WER as the sweep saw it: seed SD and each model's own noise together
    noise_sd    each model's own noise on this val set (the seed x speaker residual), the part of seed_wer_sd
                that a larger val set shrinks
    """

    population: Population
    design: Design
    seed_wer_sd: float
    noise_sd: float


def measure(scores: Scores) -> Measured:
    """The population and design that a configuration's scores (two seeds or more, every speaker with the same
    number of utterances) estimate; see Measured."""
    if scores.seeds < 2:
        raise SignificanceError(f"measuring a seed SD needs two seeds or more, not {scores.seeds}")
    labels, counts = np.unique(scores.speakers, return_counts=True)
    if counts.min() != counts.max():
        raise SignificanceError(f"speakers have {counts.min()} to {counts.max()} utterances: the design needs equal")
    errors, words = speaker_table(scores)  # (S, K), (K,)
    seed_wers = scores.seed_wers
    noise = seed_noise(errors, words)[0].variance * scores.seeds  # one seed's own noise, from the S x K residual
    seed_var = max(float(seed_wers.var(ddof=1)) - noise, 0.0)
    design = Design(len(labels), int(counts[0]), (int(scores.words.min()), int(scores.words.max())))
    population = Population(wer=scores.wer, speaker_sd=speaker_sd(scores), seed_sd=float(np.sqrt(seed_var)))
    population = with_noise(population, design, float(np.sqrt(noise)))
    return Measured(population, design, float(seed_wers.std(ddof=1)), float(np.sqrt(noise)))


def speaker_sd(scores: Scores) -> float:
    """The SD over speakers of a speaker's expected WER: the spread of the speakers' seed-averaged WERs less each
    speaker's sampling noise over its own few utterances (the ratio estimator's variance, from the spread of its
    utterances' errors about the speaker's WER times their words)."""
    errors = scores.errors.mean(axis=0)  # (U,) seed-averaged: the seeds' noise is averaged down with it
    rates, noises = [], []
    for label in np.unique(scores.speakers):
        mine = scores.speakers == label
        e, w = errors[mine], scores.words[mine]
        rate = e.sum() / w.sum()
        n = mine.sum()
        rates.append(rate)
        noises.append(n / (n - 1) * ((e - rate * w) ** 2).sum() / w.sum() ** 2 if n > 1 else 0.0)
    return float(np.sqrt(max(np.var(rates, ddof=1) - np.mean(noises), 0.0)))


def model_noise_sd(population: Population, design: Design) -> float:
    """The SD of one trained model's val WER about its expected value on a fixed val set, from its own Bernoulli
    draws alone: sum of p (1 - p) over the val set's words, over its words squared. The more the shared effects
    spread the words' error probabilities (towards always or never wrong), the less of it there is."""
    model = logit_model(population)
    total = spread(model.speaker, model.utterance, model.word, model.seed, model.interaction)
    nodes, weights = gauss_hermite()
    squared = (expit(model.mu + total * nodes) ** 2) @ weights
    words = design.utterances * (design.words[0] + design.words[1]) / 2
    return float(np.sqrt(max(population.wer - squared, 0.0) / words))


def with_noise(population: Population, design: Design, noise_sd: float) -> Population:
    """The population with a shared word difficulty (`word`, logit scale) that gives each model `noise_sd` of its
    own on the design's val set; where even none gives less noise than measured, a smaller utterance spread."""

    def excess(field: str):
        return lambda value: model_noise_sd(replace(population, **{field: value}), design) - noise_sd

    if excess("word")(0.0) <= 0.0:
        if excess("utterance")(0.0) <= 0.0:
            return replace(population, word=0.0, utterance=0.0)
        return replace(population, word=0.0, utterance=brentq(excess("utterance"), 0.0, population.utterance))
    high = MAX_WORD_SPREAD
    if excess("word")(high) > 0.0:
        return replace(population, word=high)
    return replace(population, word=brentq(excess("word"), 0.0, high, xtol=1e-6))


def seed_correlation(a: Scores, b: Scores) -> float:
    """How alike two configurations trained with the same seeds are, as `simulate`'s seed_correlation: the share
    of their between-seed variance that cancels in the per-seed differences, 1 - var(a - b) / (var(a) + var(b)),
    never below 0."""
    a, b = paired_seeds(a, b)  # the same seed ids, two or more, or a SignificanceError that says which
    total = a.seed_wers.var(ddof=1) + b.seed_wers.var(ddof=1)
    if total == 0.0:
        return 0.0
    return float(np.clip(1.0 - (a.seed_wers - b.seed_wers).var(ddof=1) / total, 0.0, MAX_SEED_CORRELATION))
