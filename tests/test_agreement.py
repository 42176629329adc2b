"""Whether separate sweeps agree: contradicting significant claims, and champions another sweep calls worse."""

import json

import pytest

from avasr.sweep.agreement import Claims, champions_not_tied, contradictions, read_claims
from avasr.sweep.verdict import VerdictError


def verdict(best: str, worse: list[str], tied: list[str], champion: str) -> dict:
    """A verdict.json's shape: rows best first, each with its label and whether it is significantly worse."""
    rows = [{"config_id": f"id-{best}", "label": best, "significantly_worse": False}]
    rows += [{"config_id": f"id-{c}", "label": c, "significantly_worse": False} for c in tied]
    rows += [{"config_id": f"id-{c}", "label": c, "significantly_worse": True} for c in worse]
    return {"configurations": rows, "champion_config_id": f"id-{champion}"}


def claims(name, best, worse=(), tied=(), champion=None) -> Claims:
    return Claims.from_verdict(name, verdict(best, list(worse), list(tied), champion or best))


def test_a_verdict_claims_its_best_beats_each_significantly_worse_configuration():
    c = claims("s42", "attention", worse=["simple"], tied=["weighted"], champion="weighted")
    assert c.best == "attention" and c.champion == "weighted"
    assert c.tied == {"attention", "weighted"} and c.beats == {("attention", "simple")}
    assert c.labels == {"attention", "weighted", "simple"}


def test_all_tied_sweeps_agree_whatever_their_best():
    sweeps = [
        claims("a", "adaptive", tied=["simple", "weighted"], champion="weighted"),
        claims("b", "weighted", tied=["adaptive", "simple"]),
        claims("c", "simple", tied=["weighted", "adaptive"], champion="weighted"),
    ]
    assert contradictions(sweeps) == [] and champions_not_tied(sweeps) == []


def test_opposite_significant_claims_contradict():
    one = claims("a", "attention", worse=["simple"])
    other = claims("b", "simple", worse=["attention"])
    assert contradictions([one, other]) == ["a: attention beats simple; b: simple beats attention"]


def test_a_champion_another_sweep_calls_worse_is_named_once_per_sweep():
    one = claims("a", "attention", tied=["simple"], champion="simple")
    other = claims("b", "weighted", worse=["simple"], tied=["attention"])
    assert champions_not_tied([one, other]) == ["a's champion simple is significantly worse than b's best"]
    assert contradictions([one, other]) == []  # a never said simple beats weighted


def test_a_champion_another_sweep_never_ranked_is_no_disagreement():
    assert champions_not_tied([claims("a", "attention"), claims("b", "simple")]) == []


def test_a_file_that_is_not_a_verdict_is_named(tmp_path):
    good = tmp_path / "smoke-1" / "verdict.json"
    good.parent.mkdir()
    good.write_text(json.dumps(verdict("adaptive", [], ["simple"], "simple")))
    assert read_claims(good).name == "smoke-1"
    (tmp_path / "bad.json").write_text('{"configurations": []}')
    with pytest.raises(VerdictError, match="bad.json: not a verdict.json"):
        read_claims(tmp_path / "bad.json")
