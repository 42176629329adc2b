"""Racing (avasr.sweep.racing) on synthetic recorded sweeps: who leaves the race and when, how trials are counted,
when it stops, and the recorded-sweep file format."""

import numpy as np
import pytest

from avasr.sweep.racing import (
    ALL_SEEDS,
    BUDGET,
    ONE_LEFT,
    Policy,
    decide,
    load_recording,
    race,
    ran,
    replay,
    replays,
    round_targets,
    save_recording,
    start,
)
from avasr.sweep.significance import SignificanceError, best_name
from avasr.sweep.simulation import Population, simulate


def recorded(populations: dict[str, Population], seeds: int, rng: int):
    return simulate(populations, seeds, rng=rng).scores


def from_recording(recording):
    """A run_round that hands out each configuration's first recorded seeds."""
    return lambda targets: {name: first(recording[name], n) for name, n in targets.items()}


def first(scores, n):
    return type(scores)(errors=scores.errors[:n], words=scores.words, speakers=scores.speakers)


def test_a_clearly_worse_configuration_leaves_after_the_first_round_of_two_seeds():
    recording = recorded({"good": Population(wer=0.1), "bad": Population(wer=0.4)}, seeds=5, rng=1)
    state = race(["good", "bad"], from_recording(recording), Policy(max_seeds=5))
    assert state.alive == ("good",) and state.stopped == ONE_LEFT
    assert state.rounds == 1 and state.seeds_done == {"good": 2, "bad": 2} and state.trials_used == 4
    result = replay(recording, rng=2)
    assert result.verdict == result.full_verdict == frozenset({"good"}) and result.agrees_with_full
    assert (result.trials_used, result.trials_full) == (4, 10)


def test_trials_are_counted_per_round_until_all_seeds_are_used():
    recording = recorded({"a": Population(wer=0.12), "c": Population(wer=0.45)}, seeds=4, rng=3)
    recording["b"] = recording["a"]  # the same errors: never significantly worse than a
    state = race(["a", "b", "c"], from_recording(recording), Policy(max_seeds=4))
    # round 1: 3 x 2 seeds; c leaves; rounds 2 and 3: a and b one seed each
    assert state.alive == ("a", "b") and state.stopped == ALL_SEEDS and state.rounds == 3
    assert state.seeds_done == {"a": 4, "b": 4, "c": 2} and state.trials_used == 10
    assert replay(recording, Policy(max_seeds=4), rng=4).trials_full == 12


def test_the_race_stops_before_a_round_that_would_exceed_the_trial_budget():
    recording = recorded({"a": Population(wer=0.12), "c": Population(wer=0.45)}, seeds=4, rng=3)
    recording["b"] = recording["a"]
    state = race(["a", "b", "c"], from_recording(recording), Policy(max_seeds=4, max_trials=9))
    assert state.stopped == BUDGET and state.trials_used == 8 and state.rounds == 2


def test_the_first_round_runs_min_seeds_and_every_later_one_one_more_up_to_max_seeds():
    policy = Policy(min_seeds=2, max_seeds=3)
    state = start(["a", "b"])
    assert round_targets(state, policy) == {"a": 2, "b": 2}
    state = ran(state, {"a": 2, "b": 2})
    assert round_targets(state, policy) == {"a": 3, "b": 3}
    assert round_targets(ran(state, {"a": 3, "b": 3}), policy) == {}


def test_nobody_leaves_before_every_configuration_has_min_seeds():
    recording = recorded({"good": Population(wer=0.1), "bad": Population(wer=0.5)}, seeds=3, rng=5)
    state = ran(start(["good", "bad"]), {"good": 1, "bad": 1})
    one_seed = {name: first(scores, 1) for name, scores in recording.items()}
    assert decide(state, one_seed, Policy()) == state


def test_equal_configurations_are_never_all_dropped():
    recording = recorded({name: Population() for name in "abcd"}, seeds=5, rng=6)
    for result in replays(recording, 40, rng=7):
        assert len(result.verdict) >= 1 and best_name(recording) in result.full_verdict


def test_replays_draw_different_seed_orders_and_count_trials_within_the_full_sweep():
    populations = {"a": Population(wer=0.13), "b": Population(wer=0.15), "c": Population(wer=0.22)}
    results = replays(recorded(populations, seeds=5, rng=8), 30, rng=9)
    assert all(2 * 3 <= r.trials_used <= r.trials_full == 15 for r in results)
    assert len({r.trials_used for r in results}) > 1  # the seed order matters to when the race ends


def test_a_recorded_sweep_reads_back_as_written(tmp_path):
    recording = recorded({"attention": Population(), "simple": Population(wer=0.2)}, seeds=3, rng=10)
    path = tmp_path / "sweep.npz"
    save_recording(path, recording, seeds=[42, 7, 123])
    loaded, seeds = load_recording(path)
    assert list(loaded) == ["attention", "simple"] and seeds.tolist() == [42, 7, 123]
    for name, scores in recording.items():
        assert np.array_equal(loaded[name].errors, scores.errors)
        assert np.array_equal(loaded[name].words, scores.words)
        assert loaded[name].speakers.tolist() == [str(s) for s in scores.speakers]


def test_a_file_that_is_no_recorded_sweep_says_what_it_lacks(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, configs=np.array(["a"]), errors=np.zeros((1, 2, 3), int))
    with pytest.raises(SignificanceError, match="it lacks seeds, speakers, words"):
        load_recording(path)


def test_a_policy_needs_two_seeds_before_any_drop():
    with pytest.raises(SignificanceError, match="2 <= min_seeds <= max_seeds"):
        Policy(min_seeds=1)
