"""The command-line entry points, run as a user runs them (subprocesses on real files)."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avasr.checkpoint import BEST_CHECKPOINT
from avasr.evaluation import evaluate_checkpoint
from avasr.train import fit
from tests.media import write_clip
from tests.synthetic import TINY as SYNTHETIC_TINY

ROOT = Path(__file__).resolve().parents[1]
TRANSCRIPTS = ["bin blue", "lay red", "set green now", "place at"]


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# Every script's --help in one interpreter: each script imports torch, Ray or MLflow before it parses its flags,
# and ten interpreters paid that ten times (~1 min). runpy runs each as `python script.py --help` would.
EVERY_HELP = """
import runpy, sys
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    print(f"=== end of {script}", flush=True)
"""


def test_every_script_has_help():
    scripts = sorted(str(p) for p in (ROOT / "experiments").glob("*.py"))
    done = subprocess.run([sys.executable, "-c", EVERY_HELP, *scripts], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    helps = done.stdout.split("=== end of ")[:-1]
    assert len(helps) == len(scripts) >= 10
    for script, text in zip(scripts, helps):
        assert "usage:" in text and text.count("usage:") == 1, (script, text[-500:])
    transcribe = " ".join(helps[scripts.index(str(ROOT / "experiments" / "transcribe.py"))].split())
    threads = transcribe.split("--threads THREADS ")[1].split(" --")[0]
    assert threads.endswith("(default: 1)"), threads  # README: one thread by default


@pytest.mark.slow
def test_two_epoch_training_then_evaluation(tmp_path):
    for i, _ in enumerate(TRANSCRIPTS):
        write_clip(tmp_path / "media", f"u{i}", 1.2 + 0.2 * i)
    lines = [f"media/u{i}.wav|media/u{i}.mp4|{t}" for i, t in enumerate(TRANSCRIPTS)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(lines[:2]) + "\n")
    out = tmp_path / "run"
    printed = run(
        "train.py",
        "--train-manifest",
        str(tmp_path / "train.txt"),
        "--val-manifest",
        str(tmp_path / "val.txt"),
        "--output-dir",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--fusion",
        "attention",
        "--feature-dim",
        "32",
        "--encoder-channels",
        "4",
        "8",
        "8",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert "best epoch" in printed
    assert (out / "best_model.pth").is_file() and (out / "last.pth").is_file()
    log = (out / "training.log").read_text()
    assert "epoch 2: train_loss" in log and "train data: 4 utterances loaded" in log

    printed = run(
        "evaluate.py",
        "--checkpoint",
        str(out / "best_model.pth"),
        "--manifest",
        str(tmp_path / "train.txt"),
        "--decoder",
        "beam",
        "--save-predictions",
    )
    assert re.search(r"^WER: \d\.\d{4}$", printed, re.M) and re.search(r"^CER: \d\.\d{4}$", printed, re.M)
    assert "utterances: 4" in printed and "decoder: beam" in printed
    rows = (out / "predictions.tsv").read_text().splitlines()
    assert rows[0] == "id\treference\thypothesis\twer\tcer" and len(rows) == 5


def hypotheses(predictions: Path) -> dict[str, str]:
    return {row["id"]: row["hypothesis"] for row in csv.DictReader(predictions.open(), delimiter="\t")}


@pytest.mark.slow
def test_evaluate_feeds_the_model_only_the_streams_asked_for(tmp_path):
    """Each lip video is paired once with a tone and once with noise, and a tiny model learns to tell the pair
    apart by its audio: on both streams their hypotheses differ, with --modalities video they are equal."""
    lines = []
    for i in range(2):
        wav, _ = write_clip(tmp_path / "tone", f"u{i}", 1.2 + 0.2 * i)
        tone, rate = sf.read(wav, dtype="float32")
        (tmp_path / "noise").mkdir(exist_ok=True)
        sf.write(tmp_path / "noise" / f"u{i}.wav", np.random.default_rng(i).normal(0, 0.2, len(tone)), rate)
        lines += [f"tone/u{i}.wav|tone/u{i}.mp4|bin blue", f"noise/u{i}.wav|tone/u{i}.mp4|lay red"]
    manifest = tmp_path / "m.txt"
    manifest.write_text("\n".join(lines) + "\n")
    config = SYNTHETIC_TINY.replace(
        train_manifest=str(manifest),
        val_manifest=str(manifest),
        output_dir=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
        data_workers=1,
        epochs=40,
        patience=40,
    )
    fit(config)
    checkpoint = tmp_path / "run" / BEST_CHECKPOINT

    evaluate_checkpoint(checkpoint, manifest, predictions_path=tmp_path / "both.tsv")
    both = hypotheses(tmp_path / "both.tsv")
    assert all(both[f"tone/u{i}"] != both[f"noise/u{i}"] for i in range(2)), both
    printed = run(
        "evaluate.py",
        "--checkpoint",
        str(checkpoint),
        "--manifest",
        str(manifest),
        "--modalities",
        "video",
        "--save-predictions",
        str(tmp_path / "video.tsv"),
    )
    assert "input: video" in printed and "utterances: 4" in printed
    video = hypotheses(tmp_path / "video.tsv")
    assert all(video[f"tone/u{i}"] == video[f"noise/u{i}"] for i in range(2)), video


def test_show_crops_writes_a_grid_image(tmp_path):
    import matplotlib.image

    write_clip(tmp_path, "u0", 1.0)
    (tmp_path / "m.txt").write_text("u0.wav|u0.mp4|bin blue\n")
    printed = run(
        "show_crops.py", "--manifest", str(tmp_path / "m.txt"), "--out", str(tmp_path / "crops.png"), "--frames", "5"
    )
    assert printed.strip() == str(tmp_path / "crops.png")
    image = matplotlib.image.imread(tmp_path / "crops.png")
    assert image.shape[:2] == (round(1 * (0.9 + 0.4) * 120), round(5 * 0.9 * 120))  # rows x cols of cells at 120 dpi
    assert image.std() > 0.05  # real pictures, not a blank canvas


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path):
    (tmp_path / "bad.txt").write_text("only|two\n")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "train.py"),
            "--train-manifest",
            str(tmp_path / "bad.txt"),
            "--val-manifest",
            str(tmp_path / "bad.txt"),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"train.py: error: {tmp_path / 'bad.txt'}: 1 bad line(s)" in done.stderr


@pytest.mark.parametrize(
    ("script", "args", "line"),
    [
        ("train.py", ["--config", "{tmp}/missing.json"], "{tmp}/missing.json: cannot read configuration: [Errno 2]"),
        ("train.py", ["--resume", "{tmp}/missing.pth"], "{tmp}/missing.pth: no such checkpoint file"),
        (
            "evaluate.py",
            ["--checkpoint", "{tmp}/foreign.pth", "--manifest", "{tmp}/m.txt"],
            "{tmp}/foreign.pth: not a checkpoint written by avasr training",
        ),
        (
            "train.py",
            ["--train-manifest", "{tmp}/m.txt", "--val-manifest", "{tmp}/m.txt", "--output-dir", "{tmp}/a_file"],
            "{tmp}/a_file: cannot write the output folder: [Errno 17] File exists",
        ),
        (
            "show_crops.py",
            ["--manifest", "{tmp}/m.txt", "--out", "{tmp}/crops.xyz"],
            "{tmp}/crops.xyz: cannot save the plot: Format 'xyz' is not supported",
        ),
        (
            "show_crops.py",
            ["--manifest", "{tmp}/corrupt.txt"],
            "{tmp}/x.mp4: cannot open the video (corrupt or not a video",
        ),
        (
            "make_corpus.py",
            ["--out", "{tmp}/a_file"],
            "{tmp}/a_file: cannot create the corpus folder: [Errno 17] File exists",
        ),
    ],
    ids=[
        "missing config",
        "missing checkpoint",
        "foreign checkpoint",
        "output folder is a file",
        "unknown image format",
        "corrupt video",
        "corpus folder is a file",
    ],
)
def test_a_users_mistake_is_one_line_naming_the_file(tmp_path, script, args, line):
    """Each ends in an AvasrError (avasr.cli); a builtin error would show its traceback."""
    write_clip(tmp_path, "u0", 1.0)
    (tmp_path / "m.txt").write_text("u0.wav|u0.mp4|bin blue\n")
    (tmp_path / "x.mp4").write_bytes(b"\x00not a video" * 100)
    (tmp_path / "corrupt.txt").write_text("u0.wav|x.mp4|bin blue\n")
    (tmp_path / "a_file").write_text("")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *(a.format(tmp=tmp_path) for a in args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"\n{script}: error: {line.format(tmp=tmp_path)}" in "\n" + done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "[ WARN" not in done.stderr
