"""Preparing the feature cache as real Ray tasks on a local two-CPU Ray."""

import os
import subprocess
import sys
import time

import pytest
import ray

import avasr.data.prepare
from avasr.config import Config
from avasr.data.cache import FeatureCache, entry_key
from avasr.data.dataset import AVDataset, DataError
from avasr.data.index import CacheIndex
from avasr.data.manifest import read_manifest
from avasr.data.prepare import RAY_CHUNK, PrepareError, prepare, run_on_ray
from tests.media import write_clip
from tests.sweeps import CLUSTER_CPUS

N_CLIPS = 2 * RAY_CHUNK + 3  # three tasks, the last one partly filled
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Clips of distinct lengths (0.8 to 1.44 s), one without a face, one too short for its transcript; train and
    val share two."""
    root = tmp_path_factory.mktemp("prepared")
    lines = []
    for i in range(N_CLIPS - 2):
        write_clip(root, f"u{i}", 0.8 + 0.04 * i)  # distinct lengths: the cache is keyed by content
        lines.append(f"u{i}.wav|u{i}.mp4|bin blue")
    write_clip(root, "noface", 1.0, face=False)
    write_clip(root, "short", 0.2)
    lines += ["noface.wav|noface.mp4|lay red", "short.wav|short.mp4|place blue at f two now"]
    (root / "train.txt").write_text("\n".join(lines[2:]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[:4]) + "\n")
    return root


def manifests(corpus) -> list[str]:
    return [str(corpus / "train.txt"), str(corpus / "val.txt")]


def cached_entries(cache_dir) -> int:
    return sum(1 for _ in cache_dir.rglob("*.pt"))


def test_ray_fills_the_cache_exactly_once_and_counts_what_training_would_skip(local_ray, corpus, tmp_path):
    config = Config(cache_dir=str(tmp_path / "cache"))
    first = prepare(manifests(corpus), config, run_on_ray, progress=False)
    c = first.counts
    assert (c.utterances, c.index_hits, c.hashed, c.built, c.errors) == (N_CLIPS, 0, N_CLIPS, N_CLIPS, 0)
    assert cached_entries(tmp_path / "cache") == N_CLIPS
    assert first.frames > 0 and first.cache_bytes > 0 and "utterances/s" in first.summary()

    again = prepare(manifests(corpus), config, run_on_ray, progress=False)
    assert (again.counts.index_hits, again.counts.hashed, again.counts.built) == (N_CLIPS, 0, 0)

    for manifest in manifests(corpus):  # the same counts as the loader of training, without the index
        loaded = AVDataset.from_manifest(manifest, config.replace(cache_dir=""), progress=False)
        assert again.loads[manifest].summary() == loaded.report.summary()
    assert "1 of them on audio alone" in again.loads[str(corpus / "train.txt")].summary()
    assert "1 skipped (too_short)" in again.loads[str(corpus / "train.txt")].summary()
    again.check()


@ray.remote(num_cpus=1)
def hold_a_cpu():
    time.sleep(120)


def test_an_interrupted_preparation_resumes_where_it_stopped(local_ray, corpus, tmp_path):
    config = Config(cache_dir=str(tmp_path / "cache"))
    stop_after = 2  # Ctrl-C in the driver once the first task's results are in, while the second task runs

    def interrupted(entries, config):
        for n, result in enumerate(run_on_ray(entries, config)):
            if n == stop_after:
                raise KeyboardInterrupt
            yield result

    # One free CPU: the three tasks run one after another, so the third has not started when Ctrl-C comes (with
    # two, it could finish first: it is the shortest)
    holders = [hold_a_cpu.remote() for _ in range(CLUSTER_CPUS - 1)]
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare(manifests(corpus), config, interrupted, progress=False)
    finally:
        for holder in holders:
            ray.cancel(holder, force=True)
    on_disk = cached_entries(tmp_path / "cache")
    assert stop_after <= on_disk <= 2 * RAY_CHUNK < N_CLIPS  # the first task done, the second perhaps in part
    cache = FeatureCache(config.cache_dir, config)
    indexed = {pair for m in manifests(corpus) for pair in CacheIndex.load(cache, m).rows}  # distinct utterances
    assert len(indexed) >= stop_after  # the index was saved on the way out

    resumed = prepare(manifests(corpus), config, run_on_ray, progress=False)
    c = resumed.counts
    assert (c.index_hits, c.hashed) == (len(indexed), N_CLIPS - len(indexed))  # what the index knew is not read
    assert c.built == N_CLIPS - on_disk  # entries written before the interruption are not featurised again
    assert cached_entries(tmp_path / "cache") == N_CLIPS


def test_unusable_utterances_are_listed_by_file_and_line_after_the_others_are_prepared(local_ray, corpus, tmp_path):
    # two utterances: fewer than RAY_MIN_UTTERANCES, so described in this process
    write_clip(corpus / "broken", "pair", 1.0, video_seconds=2.0)
    (corpus / "broken.txt").write_text("u0.wav|u0.mp4|bin blue\nbroken/pair.wav|broken/pair.mp4|bin blue\n")
    config = Config(cache_dir=str(tmp_path / "cache"))
    report = prepare([str(corpus / "broken.txt")], config, run_on_ray, progress=False)
    assert report.counts.built == 2 and len(report.errors) == 1
    assert report.errors[0].startswith(f"{corpus / 'broken.txt'}:2: ")
    with pytest.raises(DataError, match="broken.txt:2: .*video lasts 2.00 s"):
        report.check()


def test_the_sweep_warms_every_split_with_ray(local_ray, corpus, tmp_path, capsys):
    from avasr.sweep.driver import warm_feature_cache

    config = Config(
        cache_dir=str(tmp_path / "cache"),
        train_manifest=str(corpus / "train.txt"),
        val_manifest=str(corpus / "val.txt"),
    )
    (corpus / "test.txt").write_text("u3.wav|u3.mp4|bin blue\n")
    warm_feature_cache(config, [str(corpus / "test.txt")])
    cache = FeatureCache(config.cache_dir, config)
    assert all(
        cache.path_of(entry_key(e)).is_file() for e in read_manifest(corpus / "train.txt")
    )  # the face-less one too
    printed = capsys.readouterr().out
    assert f"{N_CLIPS} utterances" in printed and f"{N_CLIPS} featurised" in printed
    assert f"{corpus / 'test.txt'}: 1 utterances loaded" in printed


def test_a_cluster_with_no_free_cpu_fails_in_bounded_time_naming_what_it_waited_for(
    local_ray, corpus, tmp_path, monkeypatch
):
    monkeypatch.setattr(avasr.data.prepare, "STALLED_S", 2.0)
    monkeypatch.setattr(avasr.data.prepare, "RESULT_WAIT_S", 0.5)

    holders = [hold_a_cpu.remote() for _ in range(CLUSTER_CPUS)]
    try:
        with pytest.raises(
            PrepareError,
            match=r"no featurising task finished in 2 s: \d+ task\(s\) of 8 utterances "
            r"waiting; the cluster has .* free of",
        ):
            prepare(manifests(corpus), Config(cache_dir=str(tmp_path / "cache")), run_on_ray, progress=False)
    finally:
        for holder in holders:
            ray.cancel(holder, force=True)


@pytest.mark.slow
def test_the_command_line_prepares_on_its_own_local_ray(corpus, tmp_path):
    command = [
        sys.executable,
        "experiments/prepare.py",
        "--manifest",
        str(corpus / "train.txt"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--lip-size",
        "32",
    ]
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{N_CLIPS - 2} utterances" in done.stdout and f"{N_CLIPS - 2} featurised" in done.stdout
    assert "starting Ray" in done.stdout
    assert f"{corpus / 'train.txt'}: {N_CLIPS - 3} utterances loaded; 1 of them on audio alone" in done.stdout
    assert cached_entries(tmp_path / "cache") == N_CLIPS - 2
