"""The simulated truth (avasr.sweep.simulation) against brute force: the WER and the speaker and seed SDs a
Population states are what its logit-scale model produces, measured by Monte Carlo without the quadrature."""

import numpy as np
import pytest
from scipy.special import expit

from avasr.sweep.significance import SignificanceError
from avasr.sweep.simulation import (
    Design,
    Population,
    logit_model,
    measure,
    model_noise_sd,
    seed_correlation,
    simulate,
    with_noise,
)

POPULATION = Population(wer=0.15, speaker_sd=0.05, seed_sd=0.0125, utterance=1.0, word=1.0, interaction=0.1)


def word_rates(model, rng, speakers=1, draws=1):
    """Error probabilities of `draws` random words for each of `speakers` random speakers, everything else drawn
    afresh for every word shape = (speakers, draws)."""
    b = rng.standard_normal((speakers, 1))
    rest = rng.standard_normal((4, speakers, draws))
    others = model.utterance * rest[0] + model.word * rest[1] + model.seed * rest[2] + model.interaction * rest[3]
    return expit(model.mu + model.speaker * b + others)


def test_the_expected_wer_is_the_populations():
    rng = np.random.default_rng(0)
    assert word_rates(logit_model(POPULATION), rng, speakers=1_000_000).mean() == pytest.approx(0.15, abs=0.0005)


def test_the_speakers_sd_is_the_populations():
    rates = word_rates(logit_model(POPULATION), np.random.default_rng(1), speakers=2000, draws=500)
    # a speaker's mean over 500 draws scatters around its expectation: take that variance out
    noise = rates.var(axis=1).mean() / rates.shape[1]
    assert np.sqrt(rates.mean(axis=1).var() - noise) == pytest.approx(0.05, rel=0.05)


def test_the_seeds_sd_is_the_populations():
    truths = simulate({"a": POPULATION}, seeds=2000, design=Design(speakers=2), rng=2).seed_truth["a"]
    assert truths.std(ddof=1) == pytest.approx(0.0125, rel=0.05)
    assert truths.mean() == pytest.approx(0.15, abs=0.001)


def test_a_seeds_corpus_wer_is_unbiased_for_its_truth():
    """Over fresh val sets, the corpus WER of one seed's model averages to that seed's expected WER."""
    rng = np.random.default_rng(3)
    residuals = []
    for _ in range(400):
        sweep = simulate({"a": POPULATION}, seeds=1, rng=rng)
        residuals.append(sweep.scores["a"].wer - sweep.seed_truth["a"][0])
    assert abs(np.mean(residuals)) < 3 * np.std(residuals) / np.sqrt(len(residuals))


def test_a_population_outside_0_1_is_refused():
    with pytest.raises(ValueError, match=r"WER must lie in \(0, 1\), not 1.5"):
        logit_model(Population(wer=1.5))


# --- measuring a population from real scores ----------------------------------------------------------------------
GRID_VAL = Design(speakers=24, utterances_per_speaker=4, words=(6, 6))  # the built-in corpus's val set
NOISY = Population(wer=0.3, speaker_sd=0.08, seed_sd=0.03, word=2.0)


def test_measure_recovers_the_spreads_of_a_known_population():
    """Over 200 simulated sweeps of 5 seeds: the root mean square of each estimated SD is the truth (the method of
    moments is unbiased for variances), and each model's measured own noise is what the population predicts."""
    measured = [measure(simulate({"a": NOISY}, 5, GRID_VAL, rng=i).scores["a"]) for i in range(200)]

    def rms(values):
        return np.sqrt(np.mean(np.square(values)))

    assert np.mean([m.population.wer for m in measured]) == pytest.approx(0.3, abs=0.01)
    assert rms([m.population.speaker_sd for m in measured]) == pytest.approx(0.08, rel=0.05)
    assert rms([m.population.seed_sd for m in measured]) == pytest.approx(0.03, rel=0.1)
    assert rms([m.noise_sd for m in measured]) == pytest.approx(model_noise_sd(NOISY, GRID_VAL), rel=0.05)
    assert measured[0].design == GRID_VAL


def test_a_measured_noise_is_given_by_a_shared_word_difficulty():
    """Models that trip over the same words have less noise of their own: the word spread is solved for it."""
    quieter = with_noise(Population(wer=0.3), GRID_VAL, 0.012)
    assert quieter.word > 0.0
    assert model_noise_sd(quieter, GRID_VAL) == pytest.approx(0.012, rel=1e-4)
    simulated = [measure(simulate({"a": quieter}, 5, GRID_VAL, rng=i).scores["a"]).noise_sd for i in range(100)]
    assert np.sqrt(np.mean(np.square(simulated))) == pytest.approx(0.012, rel=0.1)


def test_a_noise_above_independent_draws_takes_the_utterance_spread_down():
    noisier = with_noise(Population(wer=0.3), GRID_VAL, 0.0185)
    assert noisier.word == 0.0 and noisier.utterance < 1.0
    assert model_noise_sd(noisier, GRID_VAL) == pytest.approx(0.0185, rel=1e-4)


def test_measuring_needs_two_seeds_and_equal_speakers():
    one_seed = simulate({"a": NOISY}, 1, GRID_VAL, rng=0).scores["a"]
    with pytest.raises(SignificanceError, match="needs two seeds or more, not 1"):
        measure(one_seed)
    scores = simulate({"a": NOISY}, 2, GRID_VAL, rng=0).scores["a"]
    uneven = type(scores)(scores.errors[:, 1:], scores.words[1:], scores.speakers[1:])
    with pytest.raises(SignificanceError, match="speakers have 3 to 4 utterances"):
        measure(uneven)


def test_seed_correlation_reads_back_how_alike_two_configurations_seeds_are():
    """Seeds that dominate the spread (SD 0.05 against a model's own noise of ~0.015): the share of the between-seed
    variance two configurations share is the simulated correlation, within the sampling error of 40 seeds."""
    seedy = Population(wer=0.3, seed_sd=0.05)
    for truth in (0.0, 0.8):
        scores = simulate({"a": seedy, "b": seedy}, 40, GRID_VAL, rng=11, seed_correlation=truth).scores
        assert seed_correlation(scores["a"], scores["b"]) == pytest.approx(truth, abs=0.2)
    with pytest.raises(ValueError, match=r"seed_correlation must lie in \[0, 1\), not 1.0"):
        simulate({"a": seedy}, 2, GRID_VAL, rng=0, seed_correlation=1.0)
