"""The simulated truth (avasr.sweep.simulation) against brute force: the WER and the speaker and seed SDs a
Population states are what its logit-scale model produces, measured by Monte Carlo without the quadrature."""

import numpy as np
import pytest
from scipy.special import expit

from avasr.sweep.simulation import Design, Population, logit_model, simulate

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
