"""The fusion sweep: spaces, resources, budgets and the MLflow store without Ray; then a tiny real sweep on a local
Ray (2 CPUs) with a real sqlite MLflow store, tracked and shipped. Faults (stops, crashes, interrupts, a tracking
server going down) are tests/test_faults.py's."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from avasr.checkpoint import BEST_CHECKPOINT, load_checkpoint
from avasr.config import Config
from avasr.data.manifest import read_manifest, write_manifest
from avasr.model import build_model, count_parameters
from avasr.sweep.champion import NOISY_VAL_METRIC, ONNX_TAG, ShipError, TrialSummary, choose_best, pareto_front
from avasr.sweep.driver import (
    DEFAULT_EXPERIMENT,
    SweepError,
    SweepOptions,
    corpus_id,
    make_scheduler,
    on_one_machine,
    plan_resources,
    plan_sweep,
    run_sweep,
)
from avasr.sweep.shipping import export_best
from avasr.sweep.spaces import CONFIG_ID_KEY, SpaceError, available_spaces, load_space
from avasr.sweep.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    PARENT_TAG,
    URI_ENV_VARS,
    TrackingError,
    check_tracking_uri,
    global_uris,
    read_metrics_csv,
    resolve_tracking_uri,
)
from avasr.train import METRICS_FILE, fit
from tests.sweeps import TINY_FIELDS, assert_all_cpus_come_back, child_runs, options, steps, write_space

PROJECT = Path(__file__).resolve().parents[1]
FINAL_METRICS = ("val_wer", "val_cer", "param_count", "cpu_latency_ms_p50", "cpu_latency_ms_p95", "val_wer_snr0_babble")
FLAT_PARAMS = ("fusion", "dropout", "lr", "epochs", "seed", "corpus_id")


# --- spaces ------------------------------------------------------------------------------------------------------
def test_shipped_spaces_load_and_cover_every_fusion():
    assert {"smoke", "fusion"} <= set(available_spaces())
    for name in ("smoke", "fusion"):
        space = load_space(name)
        assert space.space["fusion"] == {"grid_search": ["simple", "weighted", "attention", "adaptive"]}
        assert isinstance(space.space["epochs"], int)


def test_smoke_space_model_is_small():
    fixed = {k: v for k, v in load_space("smoke").space.items() if k not in ("fusion", "dropout", "lr")}
    counts = [
        count_parameters(build_model(Config.from_dict({**fixed, "fusion": f})))
        for f in ("simple", "weighted", "attention", "adaptive")
    ]
    assert max(counts) < 300_000, counts


def test_unknown_space_name_lists_the_valid_ones():
    with pytest.raises(SpaceError, match=r"unknown space 'nope': choose from fusion, robust, smoke"):
        load_space("nope")


def test_unknown_fusion_in_a_space_lists_the_valid_ones(tmp_path):
    space = write_space(tmp_path, fusion='["simple", "gated"]')
    with pytest.raises(
        SpaceError,
        match=r"space\.py: .*fusion='gated' is not one of simple, weighted, attention, "
        r"adaptive",
    ):
        load_space(str(space))


def test_unknown_field_in_a_space_is_named(tmp_path):
    space = write_space(tmp_path, learning_rate=0.1)
    with pytest.raises(SpaceError, match=r"unknown configuration keys: learning_rate"):
        load_space(str(space))


def test_space_may_not_set_what_the_sweep_owns_or_sample_epochs(tmp_path):
    with pytest.raises(SpaceError, match=r"train_manifest are set by the sweep"):
        load_space(str(write_space(tmp_path, train_manifest="x.txt")))
    path = tmp_path / "epochs.py"
    path.write_text("from ray import tune\nSPACE = {'epochs': tune.choice([2, 4])}\n")
    with pytest.raises(SpaceError, match=r"epochs must be a fixed number"):
        load_space(str(path))


def test_a_space_may_name_its_scheduler_and_the_sweep_s_option_overrides_it(tmp_path):
    assert (load_space("smoke").scheduler, load_space("fusion").scheduler) == ("fifo", "asha")
    path = tmp_path / "scheduler.py"
    path.write_text("SPACE = {'fusion': 'simple'}\nSCHEDULER = 'hyperband'\n")
    with pytest.raises(SpaceError, match=r"SCHEDULER='hyperband' is not one of asha, fifo"):
        load_space(str(path))
    smoke = load_space("smoke")
    assert isinstance(make_scheduler(options(tmp_path, tmp_path, smoke.path, scheduler=None), smoke, 25), FIFOScheduler)
    asha = make_scheduler(options(tmp_path, tmp_path, smoke.path, scheduler="asha"), smoke, 25)
    assert isinstance(asha, ASHAScheduler)


def test_bounds_of_sampled_ranges_are_validated(tmp_path):
    path = tmp_path / "dropout.py"
    path.write_text("from ray import tune\nSPACE = {'dropout': tune.uniform(0.1, 1.5)}\n")
    with pytest.raises(SpaceError, match=r"dropout must be in \[0, 1\), got 1.5"):
        load_space(str(path))


# --- resources ---------------------------------------------------------------------------------------------------
def test_two_cpus_run_two_single_cpu_trials_side_by_side():
    plan = plan_resources({"CPU": 2.0}, cpus_per_trial=1, gpus_per_trial=None)
    assert (plan.concurrency, plan.cpus, plan.gpus, plan.use_gpu) == (2, 1, 0.0, False)
    assert plan_resources({"CPU": 2.0}, cpus_per_trial=2, gpus_per_trial=None).concurrency == 1


def test_gpu_cluster_gives_each_trial_a_gpu_and_is_bounded_by_them():
    plan = plan_resources({"CPU": 16.0, "GPU": 4.0}, cpus_per_trial=2, gpus_per_trial=None)
    assert (plan.concurrency, plan.gpus, plan.use_gpu) == (4, 1.0, True)
    assert plan_resources({"CPU": 16.0, "GPU": 4.0}, 2, gpus_per_trial=0.5).concurrency == 8
    assert plan_resources({"CPU": 16.0, "GPU": 4.0}, 2, gpus_per_trial=0).use_gpu is False


def test_trials_that_could_never_start_are_refused():
    with pytest.raises(SweepError, match=r"a trial needs 3 CPUs but the Ray cluster has 2"):
        plan_resources({"CPU": 2.0}, cpus_per_trial=3, gpus_per_trial=None)
    with pytest.raises(SweepError, match=r"a trial needs 1 GPUs but the Ray cluster has 0"):
        plan_resources({"CPU": 2.0}, cpus_per_trial=1, gpus_per_trial=1)


def test_only_a_sweep_that_brought_ray_up_on_one_machine_goes_without_train_s_preemption_watcher(
    local_ray, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert on_one_machine(started_ray=True, address=None)  # the tests' local Ray: one node
    assert not on_one_machine(started_ray=False, address=None)  # a Ray this process found already up
    assert not on_one_machine(started_ray=True, address="auto")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # how `ray job submit` runs its entry point
    assert not on_one_machine(started_ray=True, address=None)


# --- choosing the best run ---------------------------------------------------------------------------------------
def summary(name: str, wer: float, cer: float = 0.5, params: int = 1000, p50: float = 10.0) -> TrialSummary:
    return TrialSummary(
        run_id=name,
        trial_id=name,
        status="FINISHED",
        fusion=name,
        dropout=0.1,
        lr=1e-3,
        val_wer=wer,
        val_cer=cer,
        param_count=params,
        latency_p50_ms=p50,
        latency_p95_ms=p50,
        checkpoint="",
        onnx_path="",
    )


def test_choose_best_is_the_lowest_wer_within_both_budgets():
    runs = [
        summary("big", 0.1, params=5_000_000),
        summary("slow", 0.2, p50=120.0),
        summary("ok", 0.3),
        summary("tie-worse-cer", 0.3, cer=0.6),
        summary("no-latency", 0.05, p50=math.nan),
        summary("no-wer", math.nan),
    ]
    assert choose_best(runs, max_params=5_000_000, max_latency_ms=100.0).run_id == "ok"
    assert choose_best(runs, max_params=6_000_000, max_latency_ms=100.0).run_id == "big"
    assert choose_best(runs, max_params=5_000_000, max_latency_ms=200.0).run_id == "slow"
    assert choose_best(runs, max_params=100, max_latency_ms=100.0) is None


def test_the_champion_can_be_chosen_on_the_noisy_val_wer():
    robust = dataclasses.replace(summary("robust", 0.30), val_wer_snr0_babble=0.40)
    fragile = dataclasses.replace(summary("fragile", 0.20), val_wer_snr0_babble=0.90)
    unmeasured = summary("unmeasured", 0.10)  # no noisy WER: never chosen on it
    runs = [robust, fragile, unmeasured]
    assert choose_best(runs).run_id == "unmeasured"
    assert choose_best(runs, select_on=NOISY_VAL_METRIC).run_id == "robust"
    with pytest.raises(ShipError, match="cannot choose on 'test_wer': choose from val_wer, val_wer_snr0_babble"):
        choose_best(runs, select_on="test_wer")


def test_a_sweep_choosing_on_an_unknown_metric_is_refused_before_ray_starts(tmp_path):
    bad = SweepOptions(
        train_manifest="t.txt", val_manifest="v.txt", select_on="test_wer", storage_path=str(tmp_path / "sweeps")
    )
    with pytest.raises(SweepError, match="unknown --select-on 'test_wer': choose from val_wer, val_wer_snr0_babble"):
        run_sweep(bad)
    assert not (tmp_path / "sweeps").exists()


# --- the MLflow store --------------------------------------------------------------------------------------------
def test_unreachable_tracking_server_fails_fast():
    started = time.monotonic()
    with pytest.raises(TrackingError, match=r"MLflow tracking server http://127.0.0.1:9 is unreachable"):
        check_tracking_uri("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(TrackingError, match=r"unreachable"):
        check_tracking_uri("http://10.255.255.1:5000")  # unroutable: a timeout, not a refusal
    assert time.monotonic() - started < 10


def test_unreachable_mlflow_stops_the_sweep_before_any_trial(tmp_path, corpus):
    started = time.monotonic()
    opts = options(tmp_path, corpus, write_space(tmp_path), mlflow_uri="http://127.0.0.1:9")
    with pytest.raises(TrackingError, match="unreachable"):
        run_sweep(opts)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "sweeps").exists()  # no sweep folder, no parent run, no trial


def test_file_store_is_refused_and_sqlite_paths_made_absolute(tmp_path, monkeypatch):
    with pytest.raises(TrackingError, match=r"refuses the plain file store"):
        check_tracking_uri("file:///tmp/mlruns")
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///store/m.db", PROJECT) == f"sqlite:///{tmp_path}/store/m.db"
    check_tracking_uri(f"sqlite:///{tmp_path}/store/m.db")
    assert (tmp_path / "store").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert resolve_tracking_uri(None, PROJECT) == "http://tracking:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None, PROJECT) == f"sqlite:///{PROJECT}/mlflow.db"


def test_global_uris_leave_mlflow_following_its_default_again(tmp_path, monkeypatch):
    for name in URI_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/store.db"
    with global_uris(store):
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (store, store)
    assert not any(name in os.environ for name in URI_ENV_VARS)  # subprocesses inherit nothing
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the default follows the working directory: nothing was pinned
    assert "elsewhere" in mlflow.get_tracking_uri() and "elsewhere" in mlflow.get_registry_uri()


# --- real sweeps -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def val_clips_as_test_splits(corpus: Path, folder: Path, splits: list[str]) -> Path:
    """A corpus.json in `folder` listing `splits`, each a manifest of the corpus's val clips; returns the last."""
    rows = [(e.audio_path, e.video_path, e.transcript) for e in read_manifest(corpus / "val_manifest.txt")]
    manifests = {split: f"{split}_manifest.txt" for split in splits}
    for file in manifests.values():
        write_manifest(folder / file, rows)
    (folder / "corpus.json").write_text(json.dumps({"id": "val-as-test", "manifests": manifests}))
    return folder / manifests[splits[-1]]


def test_tiny_sweep_tracks_one_parent_and_a_child_per_trial_and_ships_the_verdict_s_choice(tmp_path, corpus, local_ray):
    space = write_space(tmp_path, fusion='["simple", "attention"]', epochs=2)
    # the tiny corpus has no unseen speakers: its val clips stand in for two test splits of a corpus.json
    test_manifest = val_clips_as_test_splits(corpus, tmp_path / "splits", ["test_unseen_voice", "test"])
    result = run_sweep(options(tmp_path, corpus, space, test_manifest=str(test_manifest), seeds=2))

    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([result.experiment_id])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    children = child_runs(client, result)
    assert len(runs) == 5 and len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    assert parents[0].info.status == "FINISHED"
    assert client.get_experiment(result.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"leaderboard.txt", "leaderboard.json", "verdict.md", "verdict.json", "plots"} <= parent_files
    plots = {a.path for a in client.list_artifacts(parents[0].info.run_id, "plots")}
    assert plots == {"plots/pareto_front.png", "plots/verdict.png"}
    by_config = {}
    for run in children:
        by_config.setdefault(run.data.params["config_id"], []).append(run)
    assert sorted(sorted(r.data.params["seed"] for r in rs) for rs in by_config.values()) == [["42", "43"]] * 2
    expected_corpus = corpus_id(corpus / "train_manifest.txt", corpus / "val_manifest.txt")
    for run in children:
        params, metrics = run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        assert {k: params[k] for k in FLAT_PARAMS} == {
            "fusion": params["fusion"],
            "dropout": "0.1",
            "lr": "0.003",
            "epochs": "2",
            "seed": params["seed"],
            "corpus_id": expected_corpus,
        }
        assert set(FINAL_METRICS) <= set(metrics)
        assert metrics["test_wer"] == metrics["val_wer"]  # the same clips, the best checkpoint, greedy decoding
        assert metrics["test_unseen_voice_wer"] == metrics["val_wer"]  # the corpus's other test split, also measured
        config = Config.from_dict({**TINY_FIELDS, "fusion": params["fusion"]})
        assert metrics["param_count"] == count_parameters(build_model(config))
        assert 0 < metrics["cpu_latency_ms_p50"] <= metrics["cpu_latency_ms_p95"]
        for key in ("val_wer", "val_cer", "val_loss", "train_loss"):
            assert steps(client, run.info.run_id, key) == [1, 2], key
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/training_curves.png"]
        errors = sorted(a.path for a in client.list_artifacts(run.info.run_id, "errors"))
        assert errors == ["errors/test.csv", "errors/test_unseen_voice.csv", "errors/val.csv"]
    for seeds in by_config.values():  # the latency belongs to the architecture: measured once, carried by its seeds
        assert len({r.data.metrics["cpu_latency_ms_p50"] for r in seeds}) == 1
        assert sum(ONNX_TAG in r.data.tags for r in seeds) == 1

    verdict = result.verdict
    assert verdict is not None and verdict.seed_variance_measured
    assert verdict.split_names == ["test_unseen_voice"]
    assert json.loads((result.experiment_path / "verdict.json").read_text())["sentence"] == verdict.sentence()
    assert sorted(c.config_id for c in verdict.configurations) == sorted(by_config)
    for c in verdict.configurations:  # the per-utterance errors reproduce each trial's val WER exactly
        seeds = by_config[c.config_id]
        assert c.interval.estimate == pytest.approx(sum(r.data.metrics["val_wer"] for r in seeds) / 2, abs=1e-9)
    assert result.champion == verdict.shipped and result.champion.config_id == verdict.champion.config_id
    assert result.onnx_path.is_file() and not result.interrupted
    champion = client.get_model_version_by_alias("avasr", "champion")
    assert (champion.run_id, str(champion.version)) == (result.champion.run_id, result.model_version)
    assert client.get_run(result.parent_run_id).data.tags["avasr.verdict"] == verdict.sentence()

    # a sweep trial is plain `fit` with the same config and seed on the same thread count (one CPU: one thread)
    swept = Path(result.champion.checkpoint)
    config = Config.from_dict(load_checkpoint(swept / BEST_CHECKPOINT)["config"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(config.replace(output_dir=str(tmp_path / "plain")))
    finally:
        torch.set_num_threads(threads)
    plain, trial = (read_metrics_csv(folder / METRICS_FILE) for folder in (tmp_path / "plain", swept))
    for key in ("train_loss", "val_loss", "val_wer"):
        assert [row[key] for row in plain] == [row[key] for row in trial], key

    # afterwards, from MLflow alone: the same choice is shipped again without a new version (shipping is
    # idempotent); another front member, impossible budgets and unknown sweeps
    script = PROJECT / "experiments" / "export_best.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--experiment",
            DEFAULT_EXPERIMENT,
            "--mlflow-uri",
            result.tracking_uri,
            "--out",
            str(tmp_path / "best.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    again = client.get_model_version_by_alias("avasr", "champion")
    assert (again.run_id, str(again.version)) == (result.champion.run_id, result.model_version)
    assert f"version {again.version}" in done.stdout and (tmp_path / "best.onnx").is_file()
    front = [t.run_id for t in pareto_front(result.trials)]
    listed = subprocess.run(
        [sys.executable, str(script), "--mlflow-uri", result.tracking_uri, "--list-front"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == front
    shipped = export_best(
        result.tracking_uri, DEFAULT_EXPERIMENT, run_id=front[-1][:8], destination=tmp_path / "front.onnx"
    )
    assert shipped.champion.run_id == front[-1] and (tmp_path / "front.onnx").is_file()
    assert client.get_model_version_by_alias("avasr", "champion").run_id == front[-1]
    with pytest.raises(ShipError, match=r"none of its 4 finished trials is within the budgets \(params < 10,"):
        export_best(result.tracking_uri, DEFAULT_EXPERIMENT, max_params=10)
    with pytest.raises(ShipError, match=r"no sweep called 'nope'"):
        export_best(result.tracking_uri, DEFAULT_EXPERIMENT, sweep="nope")
    assert_all_cpus_come_back()


def test_a_plan_trains_every_configuration_with_every_seed_seeds_outermost(tmp_path, corpus):
    space = write_space(tmp_path, fusion='["simple", "attention"]')
    plan = plan_sweep(options(tmp_path, corpus, space, seeds=3, seed=7))
    assert (plan.configurations, plan.seeds, plan.trials) == (2, 3, 6)
    variants = plan.variants({cid: range(3) for cid in plan.config_ids})
    assert [(v["fusion"], v["seed"]) for v in variants] == [
        ("simple", 7), ("attention", 7), ("simple", 8), ("attention", 8), ("simple", 9), ("attention", 9)
    ]  # fmt: skip
    ids = {v["fusion"]: v[CONFIG_ID_KEY] for v in variants}
    assert len(set(ids.values())) == 2 and all(v[CONFIG_ID_KEY] == ids[v["fusion"]] for v in variants)
    later = plan.variants({ids["attention"]: range(2, 3)})  # a race's third round for one configuration
    assert [(v["fusion"], v["seed"]) for v in later] == [("attention", 9)]


def test_random_entries_are_drawn_once_per_configuration_and_shared_by_its_seeds(tmp_path, corpus):
    path = tmp_path / "random.py"
    path.write_text(
        "from ray import tune\n"
        f"SPACE = {{'fusion': tune.grid_search(['simple']), 'dropout': tune.uniform(0.1, 0.4), **{TINY_FIELDS!r}}}\n"
        "NUM_SAMPLES = 2\nSEEDS = 2\n".replace("'dropout': 0.1, ", "")
    )
    plan = plan_sweep(options(tmp_path, corpus, path))
    variants = plan.variants({cid: range(2) for cid in plan.config_ids})
    dropouts = {v[CONFIG_ID_KEY]: set() for v in variants}
    for v in variants:
        dropouts[v[CONFIG_ID_KEY]].add(v["dropout"])
    assert len(dropouts) == 2 and all(len(d) == 1 for d in dropouts.values())  # one draw per configuration
    assert plan_sweep(options(tmp_path, corpus, path)).varying == plan.varying  # the same draws every time
    with pytest.raises(SweepError, match="--race runs seeds in rounds from 2 up to --seeds: give --seeds 3"):
        plan_sweep(options(tmp_path, corpus, path, race=True, seeds=1))


@pytest.mark.slow
def test_a_race_runs_seeds_in_rounds_and_ends_with_a_verdict(tmp_path, corpus, local_ray):
    space = write_space(tmp_path, fusion='["simple", "attention"]', epochs=1)
    result = run_sweep(options(tmp_path, corpus, space, seeds=3, race=True, ship=False))
    seeds = sorted((t.fusion, t.seed) for t in result.trials if t.status == "FINISHED")
    worse = [c.label for c in result.verdict.configurations if c.significantly_worse]
    if worse:  # the worse configuration left after round 1: only the other one ran a third seed
        assert len(seeds) == 5 and (result.experiment_path / "round-2").is_dir()
    else:
        assert seeds == [(f, s) for f in ("attention", "simple") for s in (42, 43, 44)]
        assert (result.experiment_path / "round-2").is_dir()
    assert {c.seeds for c in result.verdict.configurations} <= {2, 3}
    assert_all_cpus_come_back()


def test_a_plan_keeps_the_sweep_only_keys_of_a_space_out_of_the_trials_config(tmp_path, corpus):
    plan = plan_sweep(options(tmp_path, corpus, write_space(tmp_path, fail_at_epoch=1)))
    assert plan.fixed["fail_at_epoch"] == 1 and plan.base.lr == 3e-3  # the trials get it; Config does not


def test_a_value_listed_twice_in_a_grid_is_one_configuration(tmp_path, corpus):
    plan = plan_sweep(options(tmp_path, corpus, write_space(tmp_path, fusion='["simple", "simple", "attention"]')))
    assert [values["fusion"] for values in plan.varying] == ["simple", "attention"] and plan.trials == 2
