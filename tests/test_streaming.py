"""Streaming from the cache and length-bucketed batches."""

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avasr.augment import Augmenter, AugmentError
from avasr.checkpoint import LAST_CHECKPOINT
from avasr.config import Config, ConfigError
from avasr.data.batching import LengthBucketSampler, padding_fraction
from avasr.data.dataset import AVDataset
from avasr.data.loader import make_loader
from avasr.data.streaming import StreamingDataset
from avasr.train import METRICS_FILE, fit
from tests.media import write_clip

TINY = dict(
    lip_size=16,
    encoder_channels=(4, 8, 8),
    feature_dim=16,
    temporal_layers=1,
    device="cpu",
    data_workers=1,
    batch_size=3,
)


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
    assert (
        "1 of them on audio alone" in streamed.report.summary() and "1 skipped (too_short)" in streamed.report.summary()
    )
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


def test_streaming_needs_a_cache(corpus):
    with pytest.raises(ConfigError, match="set cache_dir"):
        Config(streaming=True, cache_dir="")
    with pytest.raises(ValueError, match="set cache_dir"):
        StreamingDataset.from_manifest(corpus / "m.txt", Config(cache_dir="", **TINY))


@pytest.fixture(scope="module")
def speakers_corpus(tmp_path_factory):
    """Three speakers (folders) of two clips each; speaker k speaks (k + 1) times as loud, so a voice tells whose
    it is by its peak."""
    root = tmp_path_factory.mktemp("speakers")
    lines = []
    for k in range(3):
        for i in range(2):
            wav, _ = write_clip(root / f"spk{k}", f"u{i}", 0.8 + 0.2 * i)
            tone, rate = sf.read(wav, dtype="float32")
            sf.write(wav, (k + 1) * tone, rate)
            lines.append(f"spk{k}/u{i}.wav|spk{k}/u{i}.mp4|bin blue")
    (root / "m.txt").write_text("\n".join(lines) + "\n")
    return root


def test_a_streamed_babble_sample_is_bounded_spread_over_speakers_and_seeded(speakers_corpus, tmp_path):
    config = Config(cache_dir=str(tmp_path), **TINY)
    streamed = StreamingDataset.from_manifest(speakers_corpus / "m.txt", config, progress=False, keep_speech=True)
    in_memory = AVDataset.from_manifest(speakers_corpus / "m.txt", config, progress=False, keep_speech=True)
    assert streamed.members == in_memory.members == [(f"spk{k}/u{i}", f"spk{k}") for k in range(3) for i in range(2)]
    sample = streamed.speech_sample(4, seed=1)
    assert len(sample) == 4 and {speaker for _, speaker, _ in sample} == {"spk0", "spk1", "spk2"}
    speech = {u.id: u.speech.numpy() for u in in_memory.utterances}
    assert all(np.array_equal(voice, speech[i]) for i, _, voice in sample)
    assert [i for i, _, _ in streamed.speech_sample(4, seed=1)] == [i for i, _, _ in sample]
    assert len(streamed.speech_sample(100, seed=1)) == 6
    assert [i for i, _, _ in in_memory.speech_sample(4, seed=1)] == list(speech)  # in memory: all of it


def test_noise_augmentation_streams_with_the_speech_and_babble_of_other_speakers(speakers_corpus, tmp_path):
    config = Config(cache_dir=str(tmp_path), noise_prob=1.0, noise_kinds=("babble",), **TINY)
    with pytest.raises(AugmentError, match="keep_speech=True"):
        Augmenter(config, StreamingDataset.from_manifest(speakers_corpus / "m.txt", config, progress=False))
    streamed = StreamingDataset.from_manifest(speakers_corpus / "m.txt", config, progress=False, keep_speech=True)
    in_memory = AVDataset.from_manifest(speakers_corpus / "m.txt", config, progress=False, keep_speech=True)
    augmenter = Augmenter(config, streamed)
    own = {u.id: u.speech.numpy() for u in in_memory.utterances}
    loudness = {f"spk{k}": np.abs(own[f"spk{k}/u0"]).max() for k in range(3)}
    for utterance_id, speaker in streamed.members:
        pool_speakers = sorted(
            min(loudness, key=lambda s: abs(loudness[s] - np.abs(v).max())) for v in augmenter.babble[utterance_id]
        )
        assert pool_speakers == sorted(2 * [s for s in loudness if s != speaker])  # both clips of the others
    batch = next(iter(make_loader(streamed, config.replace(num_workers=2), shuffle=True)))
    assert [len(s) for s in batch.speech] == [len(own[i]) for i in batch.ids]
    noisy = augmenter(batch, np.random.default_rng(0))
    assert not torch.equal(noisy.audio, batch.audio) and torch.equal(noisy.video, batch.video)
    again = Augmenter(
        config, StreamingDataset.from_manifest(speakers_corpus / "m.txt", config, progress=False, keep_speech=True)
    )  # the same seeded voices
    assert torch.equal(again(batch, np.random.default_rng(0)).audio, noisy.audio)
    best = fit(
        config.replace(
            streaming=True,
            epochs=1,
            train_manifest=str(speakers_corpus / "m.txt"),
            val_manifest=str(speakers_corpus / "m.txt"),
            output_dir=str(tmp_path / "run"),
        )
    )
    assert best["epoch"] == 1


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


def optimizer_steps(run: Path) -> int:
    """The optimizer steps a run took, as Adam counted them in its last checkpoint."""
    return int(torch.load(run / LAST_CHECKPOINT, weights_only=True)["optimizer"]["state"][0]["step"])


def test_training_streams_from_the_cache_in_length_buckets(corpus, tmp_path):
    config = Config(
        cache_dir=str(tmp_path / "cache"),
        train_manifest=str(corpus / "m.txt"),
        val_manifest=str(corpus / "m.txt"),
        output_dir=str(tmp_path / "run"),
        epochs=2,
        streaming=True,
        max_batch_frames=80,
        **TINY,
    )
    streamed = StreamingDataset.from_manifest(corpus / "m.txt", config, progress=False)
    entries = {streamed.cache.path_of(row.key) for _, row in streamed.kept}

    def delete_the_entries_after_epoch_1(metrics, _):
        if metrics["epoch"] == 1:
            for path in entries:
                path.unlink()

    fit(config, report=delete_the_entries_after_epoch_1)
    # streamed: epoch 2 read every utterance from the cache again, and so rebuilt it (in memory, nothing is read)
    assert all(path.is_file() for path in entries)
    rows = (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
    assert len(rows) == 3

    # length buckets: each batch holds at most 80 padded video frames, so an epoch takes at least
    # ceil(frames / 80) steps, more than the ceil(utterances / 3) of batches of batch_size
    lengths = streamed.lengths
    per_epoch = [len(LengthBucketSampler(lengths, 80, config.seed, epoch)) for epoch in range(2)]
    assert min(per_epoch) >= math.ceil(sum(lengths) / 80) > math.ceil(len(lengths) / config.batch_size)
    assert optimizer_steps(tmp_path / "run") == sum(per_epoch)
