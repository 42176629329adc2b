"""The cache index: a warm start reads no media, a changed file is found again, rows follow their manifest."""

import os

import pytest
import torch

import avasr.data.cache
from avasr.config import Config
from avasr.data.cache import FeatureCache
from avasr.data.dataset import AVDataset
from avasr.data.index import CacheIndex, index_manifests
from avasr.data.manifest import read_manifest
from avasr.data.video import VideoError
from tests.media import face_frames, write_clip, write_tone, write_video

N_CLIPS = 4


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for i in range(N_CLIPS):
        write_clip(root, f"u{i}", 1.0 + 0.1 * i)
    (root / "m.txt").write_text("".join(f"u{i}.wav|u{i}.mp4|bin blue\n" for i in range(N_CLIPS)))
    return root


def config_for(tmp_path) -> Config:
    return Config(cache_dir=str(tmp_path / "cache"), data_workers=1)


def test_a_warm_start_reads_no_media_and_knows_every_length(corpus, tmp_path, monkeypatch):
    config = config_for(tmp_path)
    [cold], counts = index_manifests([corpus / "m.txt"], config, progress=False)
    assert (counts.utterances, counts.index_hits, counts.hashed, counts.built) == (N_CLIPS, 0, N_CLIPS, N_CLIPS)

    def no_reading(path):
        raise AssertionError(f"a warm start hashed {path}")

    monkeypatch.setattr(avasr.data.cache, "file_digest", no_reading)
    [warm], counts = index_manifests([corpus / "m.txt"], config, progress=False)
    assert (counts.index_hits, counts.hashed, counts.built) == (N_CLIPS, 0, 0)
    assert warm.rows == cold.rows
    assert [row.crop_frames for row in warm.rows] == [25, 28, 30, 32]  # 1.0, 1.1, 1.2, 1.3 s at 25 fps
    assert [row.mel_frames for row in warm.rows] == [101, 111, 121, 131]
    dataset = AVDataset.from_manifest(corpus / "m.txt", config, progress=False)  # through the index too
    assert dataset.lengths == [25, 28, 30, 32]


def test_a_changed_file_is_featurised_again_and_a_touched_one_only_rehashed(corpus, tmp_path):
    config = config_for(tmp_path)
    manifest = corpus / "m.txt"
    [before], _ = index_manifests([manifest], config, progress=False)
    write_tone(corpus / "u1.wav", 1.1, rate=16000)  # new content, same length
    os.utime(corpus / "u2.mp4")  # same content, new mtime
    frames = before.rows[3].crop_frames
    write_video(corpus / "u3.mp4", face_frames(frames)[:, :, ::-1])  # new video content (mirrored), same audio
    [after], counts = index_manifests([manifest], config, progress=False)
    assert (counts.index_hits, counts.hashed, counts.built) == (N_CLIPS - 3, 3, 2)
    assert after.rows[1].key != before.rows[1].key
    assert after.rows[3].key != before.rows[3].key and after.rows[3].crop_frames == frames
    assert after.rows[2].key == before.rows[2].key and after.rows[2].video_stamp != before.rows[2].video_stamp
    cache = FeatureCache(config.cache_dir, config)
    assert not torch.equal(
        cache.get(read_manifest(manifest)[1], after.rows[1].key).mel,
        cache.get(read_manifest(manifest)[1], before.rows[1].key).mel,
    )


def test_a_deleted_entry_or_a_foreign_index_is_rebuilt_and_rows_follow_the_manifest(corpus, tmp_path):
    config = config_for(tmp_path)
    manifest = corpus / "m.txt"
    [first], _ = index_manifests([manifest], config, progress=False)
    cache = FeatureCache(config.cache_dir, config)
    cache.path_of(first.rows[0].key).unlink()
    _, counts = index_manifests([manifest], config, progress=False)
    assert (counts.index_hits, counts.hashed, counts.built) == (N_CLIPS - 1, 1, 1)

    index = CacheIndex.load(cache, manifest)
    index.path.write_text('{"format": 0, "rows": "from an older avasr"}')
    _, counts = index_manifests([manifest], config, progress=False)
    assert (counts.index_hits, counts.hashed, counts.built) == (0, N_CLIPS, 0)

    manifest.write_text("u3.wav|u3.mp4|bin blue\n")
    index_manifests([manifest], config, progress=False)
    assert list(CacheIndex.load(cache, manifest).rows) == [(str(corpus / "u3.wav"), str(corpus / "u3.mp4"))]
    assert not CacheIndex.load(FeatureCache(config.cache_dir, config.replace(n_mels=80)), manifest).rows


def test_rehash_ignores_the_index(corpus, tmp_path):
    config = config_for(tmp_path)
    index_manifests([corpus / "m.txt"], config, progress=False)
    _, counts = index_manifests([corpus / "m.txt"], config, progress=False, rehash=True)
    assert (counts.index_hits, counts.hashed, counts.built) == (0, N_CLIPS, 0)


def test_a_row_one_manifests_index_knows_serves_every_manifest_listing_the_utterance(corpus, tmp_path):
    config = config_for(tmp_path)
    (corpus / "a.txt").write_text("u0.wav|u0.mp4|bin blue\nu1.wav|u1.mp4|bin blue\n")
    (corpus / "b.txt").write_text("u1.wav|u1.mp4|bin blue\nu2.wav|u2.mp4|bin blue\n")
    index_manifests([corpus / "a.txt"], config, progress=False)
    [b, a], counts = index_manifests([corpus / "b.txt", corpus / "a.txt"], config, progress=False)
    assert (counts.utterances, counts.index_hits, counts.hashed) == (3, 2, 1)
    assert b.rows[0] == a.rows[1]
    cache = FeatureCache(config.cache_dir, config)
    assert len(CacheIndex.load(cache, corpus / "b.txt").rows) == 2


def test_an_index_that_cannot_be_saved_is_a_warning_and_the_rows_still_serve(corpus, tmp_path):
    config = config_for(tmp_path)
    cache = FeatureCache(config.cache_dir, config)
    cache.root.mkdir(parents=True)
    (cache.root / "index").write_text("a file where the index folder should be")
    with pytest.warns(UserWarning, match="cannot save the cache index"):
        [indexed], counts = index_manifests([corpus / "m.txt"], config, progress=False)
    assert counts.built == N_CLIPS and all(row.key for row in indexed.rows)


def test_features_are_never_stored_under_the_key_of_other_content(corpus, tmp_path):
    config = config_for(tmp_path)
    cache = FeatureCache(config.cache_dir, config)
    entry = read_manifest(corpus / "m.txt")[0]
    stale = "0" * 64  # the key the index holds for content that has since changed
    with pytest.raises(VideoError, match="changed while it was being featurised"):
        cache.fetch(entry, stale)
    assert not cache.path_of(stale).exists()
