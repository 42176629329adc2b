"""Streaming from the cache and length-bucketed batches."""

import pickle

import numpy as np
import pytest
import torch

from avasr.config import Config, ConfigError
from avasr.data.batching import LengthBucketSampler, padding_fraction
from avasr.data.dataset import AVDataset
from avasr.data.streaming import StreamingDataset
from avasr.train import fit, make_loader
from tests.media import write_clip

TINY = dict(lip_size=16, encoder_channels=(4, 8, 8), feature_dim=16, temporal_layers=1, device="cpu",
            data_workers=1, batch_size=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    lines = []
    for i in range(7):
        write_clip(root, f"u{i}", 0.8 + 0.2 * i)
        lines.append(f"u{i}.wav|u{i}.mp4|bin blue")
    write_clip(root, "noface", 1.0, face=False)
    write_clip(root, "short", 0.2)
    lines += ["noface.wav|noface.mp4|lay red", "short.wav|short.mp4|place blue at f two now"]
    (root / "m.txt").write_text("\n".join(lines) + "\n")
    return root


def test_streaming_gives_the_in_memory_batches_under_one_seed(corpus, tmp_path):
    config = Config(cache_dir=str(tmp_path), **TINY)
    in_memory = AVDataset.from_manifest(corpus / "m.txt", config, progress=False)
    streamed = StreamingDataset.from_manifest(corpus / "m.txt", config, progress=False)
    assert streamed.report.summary() == in_memory.report.summary()
    assert "1 of them on audio alone" in streamed.report.summary() and "1 skipped (too_short)" in streamed.report.summary()
    assert streamed.lengths == in_memory.lengths
    for workers in (0, 2):  # 2: real DataLoader worker processes read the cache
        expected = list(make_loader(in_memory, config, shuffle=True, epoch=3))
        got = list(make_loader(streamed, config.replace(num_workers=workers), shuffle=True, epoch=3))
        assert len(got) == len(expected) == 3
        for a, b in zip(expected, got):
            assert a.ids == b.ids and a.streams == b.streams
            for name in ("audio", "audio_lengths", "video", "video_lengths", "targets", "target_lengths"):
                assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_a_streamed_dataset_holds_no_features(corpus, tmp_path):
    # what a DataLoader worker receives and a training worker holds: entries and index rows only
    config = Config(cache_dir=str(tmp_path), **TINY)
    in_memory = AVDataset.from_manifest(corpus / "m.txt", config, progress=False)
    streamed = StreamingDataset.from_manifest(corpus / "m.txt", config, progress=False)
    per_utterance = len(pickle.dumps(streamed)) / len(streamed)
    assert per_utterance < 1500
    assert len(pickle.dumps(in_memory)) / len(in_memory) > 10 * per_utterance
    assert not any(torch.is_tensor(v) for entry_row in streamed.kept for v in vars(entry_row[1]).values())


def test_streaming_refuses_noise_and_needs_a_cache(corpus):
    with pytest.raises(ConfigError, match="streaming=False with noise_prob"):
        Config(streaming=True, noise_prob=0.5)
    with pytest.raises(ConfigError, match="set cache_dir"):
        Config(streaming=True, cache_dir="")
    with pytest.raises(ValueError, match="set cache_dir"):
        StreamingDataset.from_manifest(corpus / "m.txt", Config(cache_dir="", **TINY))


def test_buckets_hold_every_utterance_once_within_the_frame_budget():
    lengths = np.random.default_rng(0).integers(25, 500, 1000).tolist() + [900]  # one longer than the budget
    sampler = LengthBucketSampler(lengths, max_frames=800, seed=1, epoch=0, window=256)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) * len(b) <= 800 or len(b) == 1 for b in batches)
    assert [900] in [[lengths[i] for i in b] for b in batches]
    assert len(sampler) == len(batches)
    assert list(LengthBucketSampler(lengths, 800, seed=1, epoch=0, window=256)) == batches
    assert list(LengthBucketSampler(lengths, 800, seed=1, epoch=1, window=256)) != batches
    random_batches = [list(range(i, min(i + 4, len(lengths)))) for i in range(0, len(lengths), 4)]
    assert padding_fraction(batches, lengths) < 0.1 < padding_fraction(random_batches, lengths)


def test_training_streams_in_length_buckets(corpus, tmp_path):
    config = Config(cache_dir=str(tmp_path / "cache"), train_manifest=str(corpus / "m.txt"),
                    val_manifest=str(corpus / "m.txt"), output_dir=str(tmp_path / "run"), epochs=2,
                    streaming=True, max_batch_frames=80, **TINY)
    best = fit(config)
    assert best["epoch"] in (1, 2) and np.isfinite(best["val_loss"])
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
