"""Racing: seeds run in rounds, and configurations significantly worse than the best so far leave the race, so that
trials go where the answer is still open. Plain functions, no Ray: the sweep's driver runs the trials a round asks
for (`race` takes that as a function); `replay` runs the same policy offline on a recorded full-repeat sweep by
drawing seed orders, without retraining.

The policy (`Policy`):
    round 1      every configuration runs `min_seeds` seeds (a between-seed variance needs two)
    after each   compare_to_best over the configurations still in the race; those significantly worse leave
    later ones   every configuration still in the race runs one more seed
    stop         one configuration left; every one left has run `max_seeds`; or the next round would take the
                 trials past `max_trials`
    verdict      the configurations left: tied with the best as far as the trials could tell

A recorded sweep is an .npz file (`save_recording`, `load_recording`):
    configs   shape = (C,)       str: configuration names
    errors    shape = (C, S, U)  int: word errors of configuration c's model trained with seed s, on utterance u
    words     shape = (U,)       int: reference words of each utterance
    speakers  shape = (U,)       str: speaker of each utterance
    seeds     shape = (S,)       int: the training seeds; seed s is the same seed for every configuration
Every configuration has all S seeds (a full repeat) and is scored on the same utterances in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from avasr.errors import OutputError
from avasr.sweep.significance import ALPHA, RESAMPLES, Scores, SignificanceError, compare_to_best

ONE_LEFT, ALL_SEEDS, BUDGET = "one left", "all seeds used", "trial budget"


@dataclass(frozen=True)
class Policy:
    """When seeds run and when configurations leave; see the module docstring."""

    min_seeds: int = 2
    max_seeds: int = 5
    max_trials: int | None = None
    alpha: float = ALPHA
    family: str = "pairs"
    resamples: int = RESAMPLES

    def __post_init__(self):
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise SignificanceError(f"racing needs 2 <= min_seeds <= max_seeds, not {self.min_seeds}, {self.max_seeds}")


@dataclass(frozen=True)
class RaceState:
    """The configurations still in the race (in their starting order), the seeds each configuration has run
    (those that left included), the rounds run, and why the race stopped (None while it goes on)."""

    alive: tuple[str, ...]
    seeds_done: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    stopped: str | None = None

    @property
    def trials_used(self) -> int:
        return sum(self.seeds_done.values())


@dataclass(frozen=True)
class ReplayResult:
    """One replayed race: its verdict (the configurations left), the full-repeat sweep's verdict (those not
    significantly worse with every seed), whether they agree, and the trials each took."""

    verdict: frozenset[str]
    full_verdict: frozenset[str]
    agrees_with_full: bool
    trials_used: int
    trials_full: int


def start(names: Sequence[str]) -> RaceState:
    if len(set(names)) != len(names) or not names:
        raise SignificanceError(f"a race needs distinct configuration names, not {list(names)}")
    return RaceState(alive=tuple(names), seeds_done={name: 0 for name in names})


def round_targets(state: RaceState, policy: Policy) -> dict[str, int]:
    """The seeds each configuration still in the race will have run after the next round: `min_seeds` in the first,
    one more in each later one, never more than `max_seeds`. Empty when none has seeds left to run."""
    targets = {name: max(policy.min_seeds, state.seeds_done[name] + 1) for name in state.alive}
    return {name: n for name, n in targets.items() if n <= policy.max_seeds}


def round_trials(state: RaceState, targets: dict[str, int]) -> int:
    return sum(n - state.seeds_done[name] for name, n in targets.items())


def ran(state: RaceState, targets: dict[str, int]) -> RaceState:
    """The state after a round that ran `targets`."""
    return replace(state, seeds_done={**state.seeds_done, **targets}, rounds=state.rounds + 1)


def decide(state: RaceState, scores: dict[str, Scores], policy: Policy) -> RaceState:
    """Drop the configurations significantly worse than the best of those still in the race; nothing before every
    one of them has `min_seeds` seeds. `scores` holds each configuration's seeds run so far."""
    if len(state.alive) < 2 or any(state.seeds_done[name] < policy.min_seeds for name in state.alive):
        return state
    for name in state.alive:
        if scores[name].seeds != state.seeds_done[name]:
            raise SignificanceError(f"{name} has {scores[name].seeds} seeds scored but ran {state.seeds_done[name]}")
    configs = {name: scores[name] for name in state.alive}
    rows = compare_to_best(configs, policy.alpha, resamples=policy.resamples, family=policy.family)
    worse = {row.name for row in rows if row.significantly_worse}
    return replace(state, alive=tuple(name for name in state.alive if name not in worse))


def stop_reason(state: RaceState, policy: Policy) -> str | None:
    """Why the race ends now, or None if another round runs."""
    if len(state.alive) == 1:
        return ONE_LEFT
    targets = round_targets(state, policy)
    if not targets:
        return ALL_SEEDS
    if policy.max_trials is not None and state.trials_used + round_trials(state, targets) > policy.max_trials:
        return BUDGET
    return None


def race(
    names: Sequence[str], run_round: Callable[[dict[str, int]], dict[str, Scores]], policy: Policy = Policy()
) -> RaceState:
    """Run a race to its end. `run_round(targets)` runs the trials that bring each configuration named in
    `targets` to its target seed count, and returns their Scores over all their seeds so far."""
    state, scores = start(names), {}
    while (reason := stop_reason(state, policy)) is None:
        targets = round_targets(state, policy)
        scores.update(run_round(targets))
        state = decide(ran(state, targets), scores, policy)
    return replace(state, stopped=reason)


def verdict(configs: dict[str, Scores], policy: Policy = Policy()) -> frozenset[str]:
    """The configurations not significantly worse than the best, all seeds counted."""
    rows = compare_to_best(configs, policy.alpha, resamples=policy.resamples, family=policy.family)
    return frozenset(row.name for row in rows if not row.significantly_worse)


def seed_count(recorded: dict[str, Scores]) -> int:
    counts = {scores.seeds for scores in recorded.values()}
    if len(counts) != 1:
        raise SignificanceError(f"a full-repeat sweep has as many seeds for every configuration, not {sorted(counts)}")
    return counts.pop()


def replay(
    recorded: dict[str, Scores],
    policy: Policy | None = None,
    rng: np.random.Generator | int | None = None,
    full_verdict: frozenset[str] | None = None,
) -> ReplayResult:
    """Race on a recorded full-repeat sweep: the seeds come in an order drawn at random (seeds are exchangeable),
    one order for every configuration, as in a sweep's rounds, where seed s of one configuration shares its batch
    order and draws with seed s of another; a configuration's first n seeds in it stand for the n it has run. The
    policy's max_seeds defaults to the recorded count; `full_verdict` saves recomputing it per replay."""
    seeds = seed_count(recorded)
    policy = policy or Policy(max_seeds=seeds)
    if policy.max_seeds > seeds:
        raise SignificanceError(f"the policy runs up to {policy.max_seeds} seeds but {seeds} were recorded")
    rng = np.random.default_rng(rng)
    order = rng.permutation(seeds)

    def run_round(targets: dict[str, int]) -> dict[str, Scores]:
        return {name: first_seeds(recorded[name], order, n) for name, n in targets.items()}

    final = race(list(recorded), run_round, policy)
    full = verdict(recorded, policy) if full_verdict is None else full_verdict
    result = frozenset(final.alive)
    return ReplayResult(result, full, result == full, final.trials_used, seeds * len(recorded))


def first_seeds(scores: Scores, order: np.ndarray, n: int) -> Scores:
    ids = None if scores.seed_ids is None else scores.seed_ids[order[:n]]
    return Scores(errors=scores.errors[order[:n]], words=scores.words, speakers=scores.speakers, seed_ids=ids)


def replays(
    recorded: dict[str, Scores], count: int, policy: Policy | None = None, rng: np.random.Generator | int | None = None
) -> list[ReplayResult]:
    """`count` replays with independent seed orders, against one full-repeat verdict."""
    rng = np.random.default_rng(rng)
    policy = policy or Policy(max_seeds=seed_count(recorded))
    full = verdict(recorded, policy)
    return [replay(recorded, policy, rng, full) for _ in range(count)]


def save_recording(path: Path, recorded: dict[str, Scores], seeds: Sequence[int]) -> None:
    """Write a full-repeat sweep in the format of the module docstring."""
    seed_count(recorded)
    first = next(iter(recorded.values()))
    try:
        np.savez_compressed(
            path,
            configs=np.array(list(recorded)),
            errors=np.stack([scores.errors for scores in recorded.values()]),
            words=first.words,
            speakers=np.asarray(first.speakers).astype(str),
            seeds=np.asarray(seeds),
        )
    except OSError as error:
        raise OutputError(f"cannot write the recorded sweep {path}: {error}") from error


def load_recording(path: Path) -> tuple[dict[str, Scores], np.ndarray]:
    """A recorded sweep: each configuration's Scores over all its seeds, and the seeds."""
    with np.load(path, allow_pickle=False) as data:
        missing = {"configs", "errors", "words", "speakers", "seeds"} - set(data.files)
        if missing:
            raise SignificanceError(f"{path} is no recorded sweep: it lacks {', '.join(sorted(missing))}")
        configs, errors = data["configs"], data["errors"]
        if errors.ndim != 3 or errors.shape[:2] != (len(configs), len(data["seeds"])):
            raise SignificanceError(
                f"{path}: errors has shape {errors.shape}, expected (configs, seeds, utterances) = "
                f"({len(configs)}, {len(data['seeds'])}, utterances)"
            )
        recorded = {
            str(name): Scores(errors=errors[c], words=data["words"], speakers=data["speakers"], seed_ids=data["seeds"])
            for c, name in enumerate(configs)
        }
        return recorded, data["seeds"]
