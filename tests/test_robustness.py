"""The robustness report: every input at every SNR from one load, reruns equal, video's row repeated, the files and
the MLflow logging (a real sqlite store), the fusions' figure on a sweep's parent run, and the command line."""

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from avasr.checkpoint import BEST_CHECKPOINT, save_checkpoint
from avasr.data.dataset import AVDataset
from avasr.data.manifest import write_manifest
from avasr.evaluation import evaluate_checkpoint, load_decoding
from avasr.model import build_model
from avasr.robustness import (
    FUSIONS_PLOT,
    FUSIONS_TABLE,
    INPUTS,
    REPORT_FILES,
    ReportOptions,
    RobustnessError,
    parse_snrs,
    report_checkpoint,
    robustness_report,
)
from avasr.sweep import tracking
from avasr.sweep.champion import CHECKPOINT_TAG, TEST_MANIFEST_TAG, TrialSummary
from avasr.sweep.robustness import best_per_fusion, report_run, report_sweep
from avasr.text import BLANK_ID
from tests.media import write_clip
from tests.synthetic import TINY as SYNTHETIC_TINY

ROOT = Path(__file__).resolve().parents[1]
SNRS = "clean,0,-5"
BLANK_PENALTY = 3.0
OPTIONS = ReportOptions(snrs=SNRS, noise="white", draws=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Four real clips of two speaker folders: train manifest, and a test manifest beside it."""
    root = tmp_path_factory.mktemp("robust")
    rows = [
        (*write_clip(root / speaker, f"u{i}", 1.2 + 0.2 * i), text)
        for i, (speaker, text) in enumerate(
            [("s1", "bin blue"), ("s1", "lay red"), ("s2", "set green"), ("s2", "place at")]
        )
    ]
    write_manifest(root / "test_manifest.txt", rows)
    return write_manifest(root / "train_manifest.txt", rows)


@pytest.fixture(scope="module")
def checkpoint(corpus) -> Path:
    """An untrained model whose blank is pushed down: it emits input-dependent letters, so noise changes its CER."""
    config = SYNTHETIC_TINY.replace(
        train_manifest=str(corpus), val_manifest=str(corpus), data_workers=1, cache_dir=str(corpus.parent / "cache")
    )
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.ctc_head.bias[BLANK_ID] -= BLANK_PENALTY
    path = corpus.parent / "run" / BEST_CHECKPOINT
    path.parent.mkdir()
    save_checkpoint(path, {"config": config.to_dict(), "model": model.state_dict()})
    return path


def test_snrs_parse_with_clean_and_refuse_nonsense():
    assert parse_snrs("clean, 10,5,0,-5,-10") == (None, 10.0, 5.0, 0.0, -5.0, -10.0)
    for bad in ("", "loud", "5,inf"):
        with pytest.raises(ValueError):
            parse_snrs(bad)


def test_every_input_at_every_snr_matches_a_single_evaluation_and_video_ignores_the_noise(corpus, checkpoint):
    report, files = report_checkpoint(checkpoint, OPTIONS)
    assert [(s.input, s.snr_db) for s in report.scores] == [(i, snr) for i in INPUTS for snr in (None, 0.0, -5.0)]
    assert files == [checkpoint.parent / "robustness" / name for name in REPORT_FILES]
    assert all(path.stat().st_size > 0 for path in files)
    for input in ("audio", "audio+video"):  # each noisy cell: the mean of the single evaluations of its draws
        for snr in (0.0, -5.0):
            single = [
                evaluate_checkpoint(
                    checkpoint,
                    corpus.with_name("test_manifest.txt"),
                    snr_db=snr,
                    noise="white",
                    noise_seed=seed,
                    modalities=input,
                )
                for seed in (0, 1)
            ]
            cell = next(s for s in report.scores if (s.input, s.snr_db) == (input, snr))
            assert (cell.wer, cell.cer, cell.loss) == pytest.approx(
                tuple(sum(r[key] for r in single) / 2 for key in ("wer", "cer", "loss")), abs=1e-9
            )
    clean_av = evaluate_checkpoint(checkpoint, corpus.with_name("test_manifest.txt"))
    assert (report.scores[6].cer, report.scores[6].loss) == pytest.approx((clean_av["cer"], clean_av["loss"]))
    # an untrained model's letters barely move, its loss does: each input and SNR is its own condition
    losses = {(s.input, s.snr_db): s.loss for s in report.scores}
    assert len({losses[i, snr] for i in ("audio", "audio+video") for snr in (None, 0.0, -5.0)}) == 6
    assert losses["video", None] == losses["video", 0.0] == losses["video", -5.0]  # the lips hear no noise
    assert losses["video", None] not in {losses["audio", None], losses["audio+video", None]}
    rows = list(csv.DictReader(io.StringIO(report.csv())))
    assert [(r["input"], r["snr_db"]) for r in rows[:3]] == [("audio", "clean"), ("audio", "0"), ("audio", "-5")]
    assert set(report.metrics()) == {
        f"robust_wer_{k}_{c}" for k in ("a", "v", "av") for c in ("clean", "snr0", "snr-5")
    }
    table = report.markdown().splitlines()
    assert table[0] == "white noise, 2 draw(s) per SNR from seed 0; 4 utterances loaded"
    assert [line.split("|")[1].strip() for line in table[4:]] == ["clean", "0 dB", "-5 dB"]


def test_a_rerun_gives_exactly_the_same_report(corpus, checkpoint, tmp_path):
    decoding = load_decoding(checkpoint)
    dataset = AVDataset.from_manifest(corpus, decoding.config, progress=False, keep_speech=True)
    first, again = (robustness_report(decoding, dataset, (None, 0.0), "babble", draws=2, seed=3) for _ in range(2))
    assert first == again
    other_seed = robustness_report(decoding, dataset, (None, 0.0), "babble", draws=2, seed=5)  # draws 5, 6: not 3, 4
    assert [(s.input, s.snr_db) for s in other_seed.scores] == [(s.input, s.snr_db) for s in first.scores]
    for seeded, other in zip(first.scores, other_seed.scores):  # other noise: every noisy cell moves, the rest stays
        moved = seeded.input != "video" and seeded.snr_db is not None
        assert (seeded.loss != other.loss) == moved, (seeded, other)


def test_a_model_without_a_test_set_beside_it_asks_for_one(corpus, checkpoint, tmp_path):
    manifest = write_manifest(
        tmp_path / "elsewhere.txt", [(corpus.parent / "s1/u0.wav", corpus.parent / "s1/u0.mp4", "bin blue")]
    )
    lonely = tmp_path / "lonely.pth"
    saved = torch.load(checkpoint, weights_only=True)
    torch.save({**saved, "config": {**saved["config"], "train_manifest": str(manifest)}}, lonely)
    with pytest.raises(RobustnessError, match="no test set: pass --manifest"):
        report_checkpoint(lonely, OPTIONS)


def tracked_sweep(tmp_path: Path, checkpoint: Path, corpus: Path) -> tuple[str, str, dict[str, str]]:
    """A parent run with three finished trials (two fusions) pointing at a real checkpoint, as a sweep leaves them."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = tracking.ensure_experiment(client, "robust", uri)
    parent = tracking.start_parent_run(
        client, experiment, "robust-sweep", {}, {TEST_MANIFEST_TAG: str(corpus.with_name("test_manifest.txt"))}
    )
    runs = {}
    for name, fusion, wer in (("t1", "simple", 0.5), ("t2", "simple", 0.4), ("t3", "attention", 0.6)):
        run_id = tracking.child_run(client, experiment, parent, name, name, {"fusion": fusion})
        tracking.log_metrics(client, run_id, {"val_wer": wer})
        tracking.set_tags(client, run_id, {CHECKPOINT_TAG: str(checkpoint.parent)})
        client.set_terminated(run_id, "FINISHED")
        runs[name] = run_id
    return uri, parent, runs


def test_a_trial_run_gets_its_report_files_and_metrics(corpus, checkpoint, tmp_path):
    uri, _, runs = tracked_sweep(tmp_path, checkpoint, corpus)
    report = report_run(uri, runs["t2"], OPTIONS, tmp_path / "out")
    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(runs["t2"], "robustness")}
    assert logged == {f"robustness/{name}" for name in REPORT_FILES}
    metrics = client.get_run(runs["t2"]).data.metrics
    assert metrics["robust_wer_av_snr-5"] == report.wer("audio+video", -5.0)
    with pytest.raises(RobustnessError, match="run 'nope': not found"):
        report_run(uri, "nope", OPTIONS)


def test_a_sweep_reports_each_fusions_best_trial_and_compares_them_on_the_parent(corpus, checkpoint, tmp_path):
    uri, parent, runs = tracked_sweep(tmp_path, checkpoint, corpus)
    reports = report_sweep(uri, "robust", None, OPTIONS, tmp_path / "out")
    assert list(reports) == ["simple", "attention"] or list(reports) == ["attention", "simple"]
    client = MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(parent)} >= {FUSIONS_PLOT, FUSIONS_TABLE}
    assert client.list_artifacts(runs["t2"], "robustness") and not client.list_artifacts(runs["t1"], "robustness")
    table = (tmp_path / "out" / FUSIONS_TABLE).read_text().splitlines()
    assert table[-2].startswith("| ") and {row.split("|")[1].strip() for row in table[-2:]} == {"simple", "attention"}


def test_best_per_fusion_keeps_the_lowest_val_wer_and_skips_trials_without_one():
    def trial(name, fusion, wer):
        return TrialSummary(name, name, "FINISHED", fusion, 0.1, 1e-3, wer, 0.1, 1, 1.0, 1.0, "", "")

    best = best_per_fusion([trial("a", "simple", 0.5), trial("b", "simple", 0.3), trial("c", "weighted", math.nan)])
    assert [t.run_id for t in best] == ["b"]


def test_cli_writes_the_report_for_a_checkpoint(checkpoint, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "robustness.py"),
            "--run",
            str(checkpoint),
            "--snrs",
            "clean,5",
            "--noise",
            "white",
            "--draws",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| clean |" in done.stdout and "| 5 dB |" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REPORT_FILES)
    bad = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "robustness.py"), "--run", str(checkpoint), "--snrs", "clean,loud"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and "--snrs 'clean,loud': could not convert string to float: 'loud'" in bad.stderr
