"""The sweep's answer: the Pareto front on constructed trials, the text leaderboard, and what lands on the parent
run (a real sqlite MLflow store, no Ray)."""

import json
import math

import pytest
from mlflow import MlflowClient

from avasr.sweep.champion import ShipError, TrialSummary, dominates, pareto_front
from avasr.sweep.driver import LEADERBOARD_TABLE, LEADERBOARD_TEXT, PARETO_PLOT, close_parent_run
from avasr.sweep.leaderboard import latency_staircase, leaderboard, leaderboard_table
from avasr.sweep.shipping import front_member
from avasr.sweep.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, ensure_experiment


def trial(
    name: str, wer: float, p50: float = 10.0, params: int = 1000, cer: float = 0.5, fusion: str | None = None
) -> TrialSummary:
    return TrialSummary(
        run_id=name,
        trial_id=name,
        status="FINISHED",
        fusion=fusion or name,
        dropout=0.1,
        lr=1e-3,
        val_wer=wer,
        val_cer=cer,
        param_count=params,
        latency_p50_ms=p50,
        latency_p95_ms=p50,
        checkpoint="",
        onnx_path="",
        test_wer=wer + 0.01,
        val_wer_snr0_babble=wer + 0.3,
    )


def names(trials) -> list[str]:
    return [t.run_id for t in trials]


def test_the_front_keeps_every_trade_off_and_drops_dominated_trials():
    trials = [
        trial("accurate", 0.10, p50=40.0, params=3_000_000),
        trial("fast", 0.30, p50=5.0, params=3_000_000),
        trial("small", 0.30, p50=40.0, params=200_000),
        trial("middle", 0.20, p50=20.0, params=1_000_000),
        trial("worse-everywhere", 0.35, p50=45.0, params=3_500_000),
        trial("slower-copy-of-middle", 0.20, p50=21.0, params=1_000_000),  # ties on two, worse on one: dominated
        trial("no-latency", 0.01, p50=math.nan),  # failed export: never on the front, never dominates
        trial("no-wer", math.nan, p50=1.0),
    ]
    assert names(pareto_front(trials)) == ["accurate", "middle", "fast", "small"]  # by val WER, then p50


def test_identical_trials_do_not_dominate_each_other_and_both_stay():
    a, b = trial("a", 0.2), trial("b", 0.2)
    assert not dominates(a, b) and not dominates(b, a)
    assert names(pareto_front([a, b, trial("c", 0.3)])) == ["a", "b"]
    assert pareto_front([]) == [] and pareto_front([trial("x", math.nan)]) == []


def test_a_front_member_is_found_by_run_id_prefix_and_a_dominated_run_is_refused():
    trials = [trial("abc111", 0.1, p50=30.0), trial("abd222", 0.3, p50=5.0), trial("zzz333", 0.4, p50=31.0)]
    assert front_member(trials, "abd").run_id == "abd222"
    with pytest.raises(
        ShipError,
        match=r"run zzz is not on the Pareto front.*the front is abc111 \(abc111\), "
        r"abd222 \(abd222\)",
    ):
        front_member(trials, "zzz")
    with pytest.raises(ShipError, match="more than one Pareto-front trial has a run id starting with 'ab'"):
        front_member(trials, "ab")
    with pytest.raises(ShipError, match="no Pareto-front trial has a run id starting with 'nope'"):
        front_member(trials, "nope")


def test_leaderboard_sorts_by_wer_and_marks_the_champion_and_the_front():
    runs = [
        trial("weighted", 0.4, p50=5.0),
        trial("simple", 0.2, p50=10.0),
        trial("adaptive", 0.5, p50=20.0),
        trial("attention", math.nan),
    ]
    lines = leaderboard(runs, champion=runs[1]).splitlines()
    rows = [line.split() for line in lines[2:-1]]
    assert [row[:2] for row in rows[:2]] == [["*P", "simple"], ["P", "weighted"]]
    assert [row[0] for row in rows[2:]] == ["adaptive", "attention"]  # unmarked: dominated, and no WER
    assert rows[0][6:8] == ["0.500", "0.210"]  # val WER in babble at 0 dB, and test WER, beside val WER
    table = leaderboard_table(runs, champion=runs[1])
    assert table["run_id"] == ["simple", "weighted", "adaptive", "attention"]
    assert table["pareto_front"] == [True, True, False, False] and table["champion"] == [True, False, False, False]
    assert table["val_wer_snr0_babble"][:2] == [0.5, 0.7]


def test_the_parent_run_gets_the_leaderboard_table_and_the_pareto_plot(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, "kinds", uri)
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    trials = [
        trial("fast", 0.3, p50=5.0, fusion="simple"),
        trial("accurate", 0.1, p50=30.0, fusion="adaptive"),
        trial("dominated", 0.5, p50=40.0, fusion="simple"),
    ]
    close_parent_run(client, parent, trials, champion=trials[1], interrupted=False)

    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["pareto_trials"] == 2 and run.data.metrics["best_test_wer"] == pytest.approx(0.11)
    assert run.data.tags["avasr.pareto_run_ids"] == "accurate,fast"
    artifacts = {a.path for folder in (None, "plots") for a in client.list_artifacts(parent, folder)}
    assert {LEADERBOARD_TEXT, LEADERBOARD_TABLE, f"plots/{PARETO_PLOT}"} <= artifacts
    table = json.loads(open(client.download_artifacts(parent, LEADERBOARD_TABLE, str(tmp_path))).read())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [(r["run_id"], r["pareto_front"], r["champion"]) for r in rows] == [
        ("accurate", True, True),
        ("fast", True, False),
        ("dominated", False, False),
    ]
    plot = client.download_artifacts(parent, f"plots/{PARETO_PLOT}", str(tmp_path))
    assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_plot_s_staircase_is_the_best_wer_within_each_latency():
    trials = [
        trial("slow-best", 0.1, p50=30.0),
        trial("fast", 0.4, p50=5.0),
        trial("small-only", 0.5, p50=20.0),
        trial("mid", 0.2, p50=10.0),
    ]
    assert names(latency_staircase(trials)) == ["fast", "mid", "slow-best"]
