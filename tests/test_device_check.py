"""scripts/device_check.sh, the one-command GPU check, on the parts a CPU machine can check: its syntax, the steps and
commands of --dry-run (every Python script it runs exists and accepts its flags), and --pack's corpus subset."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.test_docs import HELP_PROBE, SCRIPT

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "device_check.sh"
STEPS = ["unpack", "pytest", "train-step", "prepare", "sweep-1gpu", "sweep-quarter", "transcribe"]


def run_check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CHECK), *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def dry_run(tmp_path) -> tuple[str, Path]:
    """The dry run's output with a bundle in place (empty files: nothing is unpacked), and its work folder."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "site312.tar.xz").touch()
    (bundle / "corpus.tar.xz").touch()
    work = tmp_path / "work"
    result = run_check("--dry-run", DEVBUNDLE=str(bundle), DEVICE_CHECK_DIR=str(work))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, work


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(CHECK)], capture_output=True).returncode == 0
    assert os.access(CHECK, os.X_OK)


def test_the_dry_run_prints_every_step_in_order_and_writes_nothing(dry_run):
    out, work = dry_run
    headers = [line.split()[1] for line in out.splitlines() if line.startswith("== ")]
    assert headers == STEPS
    assert not work.exists()
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    wanted = [
        "tar -xJf",
        "-m pytest -q -p no:cacheprovider -k cuda tests/test_device.py tests/test_precision.py",
        "benchmarks/train_step.py --device cuda --model original --batch-size 16 --steps 20 --precisions fp32 bf16",
        "experiments/prepare.py",
        "--name sweep-1gpu --gpus-per-trial 1 ",
        "--name sweep-quarter --gpus-per-trial 0.25 ",
        "experiments/transcribe.py --model <the champion of sweep-quarter>/best_model.pth --device cuda",
        "experiments/transcribe.py --model <the champion of sweep-quarter>/best_model.pth --device cpu",
    ]
    found = [next((i for i, c in enumerate(commands) if w in c), None) for w in wanted]
    assert None not in found and found == sorted(found), dict(zip(wanted, found))


def test_every_python_script_of_the_dry_run_accepts_its_flags(dry_run):
    out, _ = dry_run
    runs = [m for line in out.splitlines() if line.startswith("$ ") and (m := SCRIPT.search(line[2:]))]
    scripts = sorted({m["script"] for m in runs})
    assert scripts == [
        "benchmarks/train_step.py",
        "experiments/prepare.py",
        "experiments/sweep_fusion.py",
        "experiments/transcribe.py",
    ]
    probe = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *scripts], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    accepted = json.loads(probe.stdout.splitlines()[-1])
    for m in runs:
        flags = [arg for arg in m["args"].split() if arg.startswith("--")]
        assert set(flags) <= set(accepted[m["script"]]), (
            f"{m['script']}: {sorted(set(flags) - set(accepted[m['script']]))}"
        )


def test_without_a_packed_corpus_it_builds_the_smoke_one_and_says_what_that_needs(tmp_path):
    result = run_check("--dry-run", DEVBUNDLE=str(tmp_path), DEVICE_CHECK_DIR=str(tmp_path / "work"))
    assert f"no {tmp_path}/site312.tar.xz: using this machine's own packages" in result.stdout
    assert "building the smoke corpus (needs espeak-ng, festival and flite" in result.stdout
    assert f"$ python3 experiments/make_corpus.py --size smoke --out {tmp_path / 'work' / 'corpus'}" in result.stdout


def write_corpus(root: Path) -> Path:
    """A corpus folder as the built-in one lays it out: three manifests of relative paths, a lexicon, one file more."""
    corpus = root / "medium"
    for split, count in (("train", 5), ("val", 3), ("test", 3)):
        lines = ["# a comment line", ""]
        for i in range(count):
            for suffix in ("wav", "mp4"):
                media = corpus / f"s{i % 2}" / f"{split}{i}.{suffix}"
                media.parent.mkdir(parents=True, exist_ok=True)
                media.write_bytes(b"media")
            lines.append(f"s{i % 2}/{split}{i}.wav|s{i % 2}/{split}{i}.mp4|bin blue")
        (corpus / f"{split}_manifest.txt").write_text("\n".join(lines) + "\n")
    (corpus / "lexicon.txt").write_text("bin\nblue\n")
    (corpus / "corpus.json").write_text('{"id": "the whole corpus"}')
    return corpus


def test_pack_takes_the_first_lines_of_each_manifest_and_only_their_media(tmp_path):
    corpus = write_corpus(tmp_path)
    bundle = tmp_path / "bundle"
    result = run_check("--pack", str(corpus), DEVBUNDLE=str(bundle), PACK_TRAIN="2", PACK_VAL="1", PACK_TEST="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{bundle}/corpus.tar.xz: ") and "4 utterances from" in result.stdout
    with tarfile.open(bundle / "corpus.tar.xz") as tar:
        files = {m.name: m for m in tar.getmembers() if m.isfile()}
        train = tar.extractfile(files["corpus/train_manifest.txt"]).read().decode()
    assert train == "s0/train0.wav|s0/train0.mp4|bin blue\ns1/train1.wav|s1/train1.mp4|bin blue\n"
    media = {
        f"corpus/s{i % 2}/{split}{i}.{s}"
        for split, n in (("train", 2), ("val", 1), ("test", 1))
        for i in range(n)
        for s in ("wav", "mp4")
    }
    manifests = {f"corpus/{split}_manifest.txt" for split in ("train", "val", "test")}
    assert set(files) == media | manifests | {"corpus/lexicon.txt"}  # corpus.json's id is the whole corpus's


def test_pack_without_a_corpus_and_an_unknown_flag_say_what_to_do(tmp_path):
    result = run_check("--pack", str(tmp_path / "none"), DEVBUNDLE=str(tmp_path / "bundle"))
    assert result.returncode == 1
    assert (
        "none has no train_manifest.txt: build it with python experiments/make_corpus.py --size medium" in result.stderr
    )
    result = run_check("--gpu")
    assert result.returncode == 2 and "usage: scripts/device_check.sh [--dry-run | --pack [CORPUS]]" in result.stderr
