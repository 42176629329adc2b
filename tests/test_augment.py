"""Training augmentation: noise mixed into the speech before its log-mel, SpecAugment and lip masks, modality dropout;
each off by default, deterministic under its Generator, and a resumed run augments exactly as an unbroken one."""

import csv
import dataclasses

import numpy as np
import pytest
import torch

from avasr.augment import Augmenter, AugmentError, span, warp_bands, warp_positions, warp_time
from avasr.checkpoint import LAST_CHECKPOINT
from avasr.config import AUDIO_ONLY, AUDIO_TIME_DOWNSAMPLING, ConfigError
from avasr.data.audio import standardise_bands
from avasr.data.dataset import AVDataset, collate
from avasr.data.mixing import make_noise, mix_at_snr
from avasr.data.noisy_speech import speech_features
from avasr.train import METRICS_FILE, fit
from tests.synthetic import TINY, dataset

SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
SPEAKER_MEAN = 0.01


def with_speech(data: AVDataset, speakers: int = 4) -> AVDataset:
    """The synthetic utterances with speech as long as their frames, spread over `speakers` speakers; speaker k's
    speech is noise around a mean of SPEAKER_MEAN * (k + 1), which tells whose voice a babble pool holds."""
    g = torch.Generator().manual_seed(1)
    return AVDataset(
        [
            dataclasses.replace(
                u,
                speaker=f"spk{i % speakers}",
                id=f"spk{i % speakers}/{i}",
                speech=SPEAKER_MEAN * (i % speakers + 1)
                + 0.001 * torch.randn(SAMPLES_PER_FRAME * u.video.shape[0], generator=g),
            )
            for i, u in enumerate(data)
        ]
    )


def blank(stream: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,) bool: which utterances have this stream blanked whole."""
    return (stream == 0).flatten(1).all(1)


def augmented(config, data, seed=0):
    batch = collate(list(data))
    return batch, Augmenter(config, data)(batch, np.random.default_rng(seed))


def test_everything_is_off_by_default_and_the_batch_is_untouched():
    data = dataset()
    augmenter = Augmenter(TINY, data)
    assert not augmenter.active
    batch, out = augmented(TINY, data)
    assert torch.equal(out.audio, batch.audio) and torch.equal(out.video, batch.video)


def test_noise_is_the_evaluation_mixing_of_the_clean_speech_then_its_log_mel():
    data = with_speech(dataset())
    config = TINY.replace(noise_prob=1.0, noise_kinds=("white",), noise_snr_db=(3.0, 3.0))
    batch, out = augmented(config, data, seed=5)
    rng = np.random.default_rng(5)  # the Augmenter's draws for row 0: probability, kind, SNR, then the noise
    rng.random(), rng.integers(1), rng.uniform(3.0, 3.0)
    speech, frames = batch.speech[0].numpy(), int(batch.video_lengths[0])
    expected = speech_features(mix_at_snr(speech, make_noise("white", len(speech), rng), 3.0), frames, config)
    assert torch.equal(out.audio[0, 0, :, : AUDIO_TIME_DOWNSAMPLING * frames], expected)
    assert torch.equal(out.audio[0, 0, :, AUDIO_TIME_DOWNSAMPLING * frames :], batch.audio[0, 0, :, 4 * frames :])
    assert torch.equal(out.video, batch.video)  # noise is for the ears only
    again = Augmenter(config, data)(batch, np.random.default_rng(5))
    other = Augmenter(config, data)(batch, np.random.default_rng(6))
    assert torch.equal(again.audio, out.audio) and not torch.equal(other.audio, out.audio)


def test_babble_is_drawn_from_other_training_speakers_only():
    data = with_speech(dataset(), speakers=4)
    augmenter = Augmenter(TINY.replace(noise_prob=0.5, noise_kinds=("babble",)), data)
    for u in data:
        pool_speakers = {f"spk{round(v.mean() / SPEAKER_MEAN) - 1}" for v in augmenter.babble[u.id]}
        assert pool_speakers == {f"spk{k}" for k in range(4)} - {u.speaker}, u.id


def test_noise_without_the_speech_says_how_to_load_it():
    with pytest.raises(AugmentError, match=r"load \(or stream\) the training set with keep_speech=True"):
        Augmenter(TINY.replace(noise_prob=0.1), dataset())


def test_masks_blank_spans_within_each_utterance():
    data = dataset()
    config = TINY.replace(freq_masks=2, freq_mask_bands=5, audio_time_masks=2, video_time_masks=3, time_mask_frames=4)
    batch, out = augmented(config, data, seed=3)
    changed_audio = out.audio != batch.audio  # (B, 1, n_mels, T_a)
    changed_video = (out.video != batch.video).flatten(2).any(-1)  # (B, T_v)
    assert changed_audio.any() and changed_video.any()
    assert (out.audio[changed_audio] == 0).all() and (out.video[out.video != batch.video] == 0).all()
    for i, frames in enumerate(batch.video_lengths.tolist()):
        assert not changed_audio[i, 0, :, AUDIO_TIME_DOWNSAMPLING * frames :].any()  # padding untouched
        assert changed_video[i].nonzero().numel() <= 3 * 4 and not changed_video[i, frames:].any()


def test_a_frequency_warp_moves_a_band_by_its_factor_and_keeps_bands_standardised():
    mel = torch.zeros(40, 50)
    mel[:, ::2] = 1.0  # every band alternates over time ...
    mel[10] = torch.linspace(0.0, 1.0, 50)  # ... but band 10, which rises: where does it go?
    ramp = standardise_bands(mel)[10]
    up, down = warp_bands(mel, 1.5), warp_bands(mel, 0.8)
    assert torch.allclose(up[15], ramp, atol=1e-5) and torch.allclose(down[8], ramp, atol=1e-5)  # band f <- f / factor
    assert not torch.allclose(up[10], ramp, atol=0.1)
    for warped in (up, down):
        assert torch.allclose(warped.mean(dim=1), torch.zeros(40), atol=1e-5)
        assert torch.allclose(warped.std(dim=1), torch.ones(40), atol=1e-3)
    assert torch.allclose(warp_bands(mel, 1.0), standardise_bands(mel), atol=1e-6)


def test_a_frequency_warp_changes_only_real_frames_and_the_same_seed_warps_alike():
    config = TINY.replace(freq_warp=0.2)
    batch, out = augmented(config, dataset(), seed=3)
    for i, frames in enumerate(batch.video_lengths.tolist()):
        real = AUDIO_TIME_DOWNSAMPLING * frames
        assert not torch.equal(out.audio[i, 0, :, :real], batch.audio[i, 0, :, :real])
        assert torch.equal(out.audio[i, 0, :, real:], batch.audio[i, 0, :, real:])  # padding untouched
    assert torch.equal(augmented(config, dataset(), seed=3)[1].audio, out.audio)


def test_warp_positions_move_the_centre_and_keep_the_ends():
    assert warp_positions(10, 4, 2).tolist() == pytest.approx([0, 2 / 3, 4 / 3, 2, 8 / 3, 10 / 3, 4, 17 / 3, 22 / 3, 9])
    assert warp_positions(10, 4, 0).tolist() == list(range(10))


def test_a_time_warp_moves_audio_and_lips_alike_and_leaves_padding_and_the_ends():
    frames, padded = 20, 24
    mel = torch.arange(AUDIO_TIME_DOWNSAMPLING * padded, dtype=torch.float32).repeat(3, 1)  # each frame: its time
    lips = torch.arange(padded, dtype=torch.float32).reshape(padded, 1, 1, 1).repeat(1, 1, 2, 2)
    warped_mel, warped_lips = mel.clone(), lips.clone()
    rng, again = np.random.default_rng(5), np.random.default_rng(5)
    warp_time(warped_mel, warped_lips, frames, 3, rng)
    centre = int(again.integers(4, 16, endpoint=True))
    shift = int(again.integers(-3, 3, endpoint=True))
    assert shift != 0
    audio_time, video_time = warped_mel[0], warped_lips[:, 0, 0, 0]
    assert audio_time[AUDIO_TIME_DOWNSAMPLING * (centre + shift)] == AUDIO_TIME_DOWNSAMPLING * centre
    assert video_time[centre + shift] == centre  # the frame at the moved point is the centre, in both streams
    assert audio_time[0] == 0 and audio_time[AUDIO_TIME_DOWNSAMPLING * frames - 1] == mel[0, 79]
    assert video_time[0] == 0 and video_time[frames - 1] == frames - 1
    assert torch.equal(warped_mel[:, AUDIO_TIME_DOWNSAMPLING * frames :], mel[:, AUDIO_TIME_DOWNSAMPLING * frames :])
    assert torch.equal(warped_lips[frames:], lips[frames:])
    assert (audio_time[1:80] >= audio_time[:79]).all() and (video_time[1:frames] >= video_time[: frames - 1]).all()
    assert torch.equal(warped_mel[1], warped_mel[0])  # every band alike


def test_a_time_warp_leaves_utterances_too_short_for_it():
    mel, lips = torch.randn(3, 28), torch.randn(7, 1, 2, 2)
    before = mel.clone(), lips.clone()
    warp_time(mel, lips, 7, 3, np.random.default_rng(0))  # 7 < 2 * 3 + 2 frames
    assert torch.equal(mel, before[0]) and torch.equal(lips, before[1])


def test_a_time_warp_changes_only_real_frames_and_the_same_seed_warps_alike():
    config = TINY.replace(time_warp=2)
    batch, out = augmented(config, dataset(), seed=3)
    assert not torch.equal(out.audio, batch.audio) and not torch.equal(out.video, batch.video)
    for i, frames in enumerate(batch.video_lengths.tolist()):
        assert torch.equal(out.video[i, frames:], batch.video[i, frames:])
    again = augmented(config, dataset(), seed=3)[1]
    assert torch.equal(again.audio, out.audio) and torch.equal(again.video, out.video)


def test_span_stays_inside_and_never_exceeds_its_width():
    rng = np.random.default_rng(0)
    spans = [span(7, 4, rng) for _ in range(500)]
    assert all(0 <= start and start + width <= 7 and width <= 4 for start, width in spans)
    assert {width for _, width in spans} == {0, 1, 2, 3, 4}
    assert span(2, 10, rng)[1] <= 2


def test_modality_dropout_blanks_one_whole_stream_and_spares_audio_only_utterances():
    data = dataset(seed=2)
    data = AVDataset([dataclasses.replace(data[0], streams=AUDIO_ONLY), *list(data)[1:]] * 25)  # 200 utterances
    batch, out = augmented(TINY.replace(modality_dropout=1.0), data, seed=4)
    audio_gone, video_gone = blank(out.audio), blank(out.video)
    both = [s != AUDIO_ONLY for s in batch.streams]
    assert not (audio_gone & video_gone).any()
    assert all(a or v for a, v, b in zip(audio_gone, video_gone, both) if b)  # exactly one stream each
    assert not any(a for a, b in zip(audio_gone, both) if not b)  # an audio-only utterance keeps its audio
    assert 70 <= int(audio_gone.sum()) <= 105  # about half of the 175 utterances with both streams


def test_modality_dropout_blanks_a_stream_at_its_rate_and_the_same_seed_blanks_the_same_ones():
    data = AVDataset(list(dataset(seed=2)) * 50)  # 400 utterances, all with both streams
    config = TINY.replace(modality_dropout=0.3)
    _, out = augmented(config, data, seed=5)
    blanked = blank(out.audio) | blank(out.video)
    assert 0.21 * len(data) <= int(blanked.sum()) <= 0.39 * len(data)  # 0.3 +- 4 binomial standard deviations
    _, again = augmented(config, data, seed=5)
    assert torch.equal(again.audio, out.audio) and torch.equal(again.video, out.video)


def test_augmentation_fields_are_checked():
    for bad in (
        dict(noise_prob=1.5),
        dict(modality_dropout=-0.1),
        dict(noise_kinds=("brown",)),
        dict(noise_snr_db=(10.0, 0.0)),
        dict(noise_snr_db=(1.0,)),
        dict(freq_masks=-1),
        dict(freq_warp=1.0),
        dict(freq_warp=-0.1),
        dict(time_warp=-1),
    ):
        with pytest.raises(ConfigError):
            TINY.replace(**bad)


def test_a_resumed_run_augments_as_the_unbroken_one(tmp_path):
    data = with_speech(dataset())
    config = TINY.replace(
        noise_prob=0.5,
        modality_dropout=0.3,
        freq_masks=1,
        audio_time_masks=1,
        video_time_masks=1,
        time_warp=1,
        epochs=3,
    )
    fit(config.replace(output_dir=str(tmp_path / "full")), datasets=(data, data))
    fit(config.replace(output_dir=str(tmp_path / "cut"), epochs=2), datasets=(data, data))
    fit(
        config.replace(output_dir=str(tmp_path / "cut")),
        datasets=(data, data),
        resume=tmp_path / "cut" / LAST_CHECKPOINT,
    )
    full, cut = (list(csv.DictReader((tmp_path / run / METRICS_FILE).open())) for run in ("full", "cut"))
    assert [r["train_loss"] for r in cut] == [r["train_loss"] for r in full]
    clean = fit(TINY.replace(epochs=3, output_dir=str(tmp_path / "clean")), datasets=(data, data))
    assert clean["train_loss"] != pytest.approx(float(full[-1]["train_loss"]))  # augmentation changed training
