import dataclasses
import multiprocessing

import pytest
import torch

from avasr.config import Config
from avasr.data.cache import FeatureCache, entry_key, preprocessing_key
from avasr.data.dataset import AVDataset
from avasr.data.manifest import read_manifest
from tests.media import face_frames, write_clip, write_video

N_CLIPS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cached")
    for i in range(N_CLIPS):
        write_clip(root, f"u{i}", 1.0 + 0.1 * i)
    write_clip(root, "noface", 1.0, face=False)
    lines = [f"u{i}.wav|u{i}.mp4|bin blue" for i in range(N_CLIPS)] + ["noface.wav|noface.mp4|lay red"]
    (root / "m.txt").write_text("\n".join(lines) + "\n")
    return root


def test_second_load_reads_the_cache(corpus, tmp_path):
    config = Config(cache_dir=str(tmp_path))
    entry = read_manifest(corpus / "m.txt")[0]
    cache = FeatureCache(tmp_path, config)
    first = cache.get(entry)
    path = cache.path_of(entry_key(entry))
    assert path.is_file() and first.crops.shape[1:] == (64, 64)
    # tamper with the stored entry: what comes back must be the stored one, not a recomputation
    torch.save({"mel": torch.zeros(40, 3), "crops": torch.ones(2, 64, 64, dtype=torch.uint8)}, path)
    again = cache.get(entry)
    assert torch.equal(again.mel, torch.zeros(40, 3)) and again.crops.shape == (2, 64, 64)


def test_key_follows_file_content_and_preprocessing_config(corpus, tmp_path):
    entry = read_manifest(corpus / "m.txt")[0]
    base = FeatureCache(tmp_path, Config())
    assert preprocessing_key(Config()) == preprocessing_key(Config(lr=1.0, fusion="simple", cache_dir="x"))
    assert base.path_of(entry_key(entry)) != FeatureCache(tmp_path, Config(lip_size=48)).path_of(entry_key(entry))
    assert base.path_of(entry_key(entry)) != FeatureCache(tmp_path, Config(n_mels=80)).path_of(entry_key(entry))
    write_clip(tmp_path / "copy", "same", 1.0)  # byte-identical to u0: same key wherever it lives
    same = dataclasses.replace(entry, audio_path=tmp_path / "copy" / "same.wav")
    assert base.path_of(entry_key(same)) == base.path_of(entry_key(entry))
    write_clip(tmp_path / "copy", "other", 1.3)  # other audio content, same video
    changed = dataclasses.replace(entry, audio_path=tmp_path / "copy" / "other.wav")
    assert base.path_of(entry_key(changed)) != base.path_of(entry_key(entry))
    write_video(tmp_path / "copy" / "mirrored.mp4", face_frames(25)[:, :, ::-1])  # same audio, other video
    other_video = dataclasses.replace(entry, video_path=tmp_path / "copy" / "mirrored.mp4")
    assert base.path_of(entry_key(other_video)) != base.path_of(entry_key(entry))


def test_no_face_is_remembered_with_the_log_mel(corpus, tmp_path):
    cache = FeatureCache(tmp_path, Config())
    entry = read_manifest(corpus / "m.txt")[-1]
    first = cache.get(entry)
    assert first.no_face.startswith(f"{corpus}/noface.mp4: no face found") and first.crops.shape == (0, 64, 64)
    assert first.mel.shape == (40, 101)
    stored = torch.load(cache.path_of(entry_key(entry)), weights_only=True)
    torch.save({**stored, "mel": torch.zeros(40, 3)}, cache.path_of(entry_key(entry)))
    assert torch.equal(cache.get(entry).mel, torch.zeros(40, 3))  # read back, not detected again
    torch.save({"no_face": first.no_face}, cache.path_of(entry_key(entry)))  # an entry from before the log-mel was kept
    again = cache.get(entry)
    assert torch.equal(again.mel, first.mel) and again.no_face == first.no_face


def _build(args):
    manifest, cache_dir = args
    ds = AVDataset.from_manifest(manifest, Config(cache_dir=cache_dir, data_workers=1), progress=False)
    return [u.id for u in ds]


@pytest.mark.slow
def test_parallel_builders_share_one_cache_safely(corpus, tmp_path):
    """Two processes build the same entries at once (as two Ray trials would); both succeed, nothing is torn."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        ids = pool.map(_build, [(corpus / "m.txt", str(tmp_path))] * 2)
    assert ids[0] == ids[1] and len(ids[0]) == N_CLIPS + 1  # the face-less clip runs on audio alone
    entries = [p for p in tmp_path.rglob("*.pt")]
    assert len(entries) == N_CLIPS + 1 and not list(tmp_path.rglob(".tmp-*"))
    for path in entries:
        torch.load(path, weights_only=True)


@pytest.mark.slow
def test_worker_processes_give_the_same_dataset_as_one_process(corpus, tmp_path):
    # more clips than MIN_UTTERANCES_PER_WORKER * 2 so the pool really starts
    lines = (corpus / "m.txt").read_text().splitlines() * 6
    (corpus / "big.txt").write_text("\n".join(lines) + "\n")
    serial = AVDataset.from_manifest(corpus / "big.txt", Config(cache_dir="", data_workers=1), progress=False)
    parallel = AVDataset.from_manifest(corpus / "big.txt", Config(cache_dir="", data_workers=2), progress=False)
    indexed = AVDataset.from_manifest(
        corpus / "big.txt", Config(cache_dir=str(tmp_path), data_workers=2), progress=False
    )  # the cache filled by the index's process pool
    for other in (parallel, indexed):
        assert [u.id for u in serial] == [u.id for u in other]
        assert all(torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio) for a, b in zip(serial, other))
        assert serial.report.summary() == other.report.summary()


def test_an_unreadable_entry_is_rebuilt(corpus, tmp_path):
    cache = FeatureCache(tmp_path, Config())
    entry = read_manifest(corpus / "m.txt")[0]
    first = cache.get(entry)
    cache.path_of(entry_key(entry)).write_bytes(b"truncated by a disk fault")
    again = cache.get(entry)
    assert torch.equal(again.crops, first.crops) and torch.equal(again.mel, first.mel)
    assert torch.load(cache.path_of(entry_key(entry)), weights_only=True)["crops"].shape == first.crops.shape
