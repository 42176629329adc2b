"""Evaluation in noise at fixed SNRs: the noisy dataset, its determinism, its SNR, babble's speakers, the averaged
table and the command line. Audio-only corpora (tones, placeholder videos) where video is never read; real clips
(tests.media) where it is."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avasr.checkpoint import BEST_CHECKPOINT
from avasr.config import Config
from avasr.data.audio import load_speech, log_mel
from avasr.data.cache import FeatureCache, entry_key
from avasr.data.dataset import AVDataset, Utterance
from avasr.data.manifest import read_manifest, write_manifest
from avasr.data.mixing import NoiseError
from avasr.data.noisy_speech import NoiseSpec, noisy_dataset, noisy_waveforms, pools_from_voices
from avasr.evaluation import evaluate_at_snrs, evaluate_checkpoint
from avasr.features import align_audio_to_video
from avasr.train import fit
from tests.media import write_clip
from tests.test_mixing import SNR_TOLERANCE_DB, _snr_db

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
SPEAKER_TONES = {"spkA": 300.0, "spkB": 1100.0, "spkC": 2300.0}  # Hz: one pure tone per speaker
TONE_SECONDS = (0.8, 1.0)  # two utterances per speaker
CLIP_SECONDS = 1.2  # 30 video frames: enough for CTC on every transcript below
TRANSCRIPTS = ["bin blue", "lay red", "set green"]
TINY = dict(
    lip_size=16,
    encoder_channels=(4, 8, 8),
    feature_dim=16,
    temporal_layers=1,
    batch_size=2,
    device="cpu",
    data_workers=1,
)


# --- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speakers(tmp_path_factory) -> Path:
    """Audio-only manifest: three speaker folders, each speaker a pure tone (placeholder videos are never read)."""
    root = tmp_path_factory.mktemp("speakers")
    rows = []
    for speaker, frequency in SPEAKER_TONES.items():
        for k, seconds in enumerate(TONE_SECONDS):
            t = np.arange(int(seconds * RATE)) / RATE
            wav, mp4 = root / speaker / f"u{k}.wav", root / speaker / f"u{k}.mp4"
            wav.parent.mkdir(exist_ok=True)
            sf.write(wav, (0.3 * np.cos(2 * np.pi * frequency * t)).astype(np.float32), RATE)
            mp4.write_bytes(b"")
            rows.append((wav, mp4, "bin blue"))
    return write_manifest(root / "manifest.txt", rows)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Real A/V clips (a face, a tone) in one folder, their manifest and a warm feature cache beside them."""
    root = tmp_path_factory.mktemp("clips")
    rows = [(*write_clip(root / "clips", f"u{i}", CLIP_SECONDS + 0.2 * i), text) for i, text in enumerate(TRANSCRIPTS)]
    return write_manifest(root / "manifest.txt", rows)


@pytest.fixture(scope="module")
def config(clips) -> Config:
    return Config(cache_dir=str(clips.parent / "cache"), **TINY)


@pytest.fixture(scope="module")
def checkpoint(clips, config) -> Path:
    """A tiny model trained one epoch on the clips."""
    out = clips.parent / "run"
    fit(config.replace(train_manifest=str(clips), val_manifest=str(clips), output_dir=str(out), epochs=1))
    return out / BEST_CHECKPOINT


def load(manifest: Path, config: Config, noise: NoiseSpec | None = None) -> AVDataset:
    dataset = AVDataset.from_manifest(manifest, config, progress=False, keep_speech=noise is not None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # three clips are too few for six babble talkers: expected here
        return noisy_dataset(dataset, noise, config) if noise else dataset


def speech_only(manifest: Path, config: Config) -> AVDataset:
    """The manifest's speech as utterances with placeholder video: for noise, which never looks at the video."""
    return AVDataset(
        [
            Utterance(
                e.utterance_id,
                e.speaker,
                torch.zeros(config.n_mels, 4),
                torch.zeros(1, 1, 1),
                torch.zeros(1),
                e.transcript,
                speech=load_speech(e.audio_path, config),
            )
            for e in read_manifest(manifest)
        ]
    )


# --- the noisy dataset -------------------------------------------------------------------------------------------
def test_noisy_dataset_changes_the_audio_only(clips, config):
    spec = NoiseSpec("white", snr_db=0.0, seed=3)
    clean, noisy = load(clips, config), load(clips, config, spec)
    assert [u.id for u in noisy] == [u.id for u in clean] == [f"clips/u{i}" for i in range(3)]
    noisy_speech = noisy_waveforms(AVDataset.from_manifest(clips, config, progress=False, keep_speech=True), spec)
    for c, n, speech in zip(clean, noisy, noisy_speech):
        assert torch.equal(n.video, c.video) and torch.equal(n.targets, c.targets)
        assert n.audio.shape == c.audio.shape and (n.audio - c.audio).abs().mean() > 0.1
        expected = align_audio_to_video(log_mel(torch.from_numpy(speech), config), c.video.shape[0], config)
        assert torch.equal(n.audio, expected)  # the clean pipeline, on the noisy waveform


def test_noisy_dataset_takes_lip_crops_from_the_feature_cache(clips, tmp_path):
    config = Config(cache_dir=str(tmp_path / "cache"), **TINY)
    clean = load(clips, config)  # fills the cache
    cache = FeatureCache(config.cache_dir, config)
    for entry in read_manifest(clips):  # mark the cached crops: a fresh face detection would not reproduce this
        stored = torch.load(cache.path_of(entry_key(entry)), weights_only=True)
        torch.save({**stored, "crops": 255 - stored["crops"]}, cache.path_of(entry_key(entry)))
    noisy = load(clips, config, NoiseSpec("pink", snr_db=5.0))
    for c, n in zip(clean, noisy):
        assert torch.equal(n.video, 255 - c.video)


def test_same_seed_gives_identical_features_and_another_seed_different_ones(clips, config):
    first, again = (load(clips, config, NoiseSpec("babble", snr_db=0.0, seed=7)) for _ in range(2))
    other = load(clips, config, NoiseSpec("babble", snr_db=0.0, seed=8))
    for a, b, c in zip(first, again, other):
        assert torch.equal(a.audio, b.audio)
        assert not torch.allclose(a.audio, c.audio, atol=1e-3)


# --- the noise itself --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 10.0])
def test_mixed_waveform_has_the_requested_snr(speakers, kind, snr_db):
    dataset = speech_only(speakers, Config(cache_dir=""))
    noisy = noisy_waveforms(dataset, NoiseSpec(kind, snr_db=snr_db, talkers=2))
    for utterance, mixed in zip(dataset, noisy):
        speech = utterance.speech.numpy()
        assert mixed.shape == speech.shape and mixed.dtype == np.float32
        assert abs(_snr_db(speech, mixed) - snr_db) < SNR_TOLERANCE_DB


def test_pools_exclude_the_speaker_and_a_flat_folder_excludes_the_utterance():
    def babble_pools(speakers, speech):  # every utterance is a member and a voice, as in a dataset in memory
        ids = [str(i) for i in range(len(speech))]
        return pools_from_voices(list(zip(ids, speakers)), list(zip(ids, speakers, speech)))

    voices = [np.full(3, float(i + 1)) for i in range(6)]
    speakers = ["spkA", "spkA", "spkB", "spkB", "spkC", "spkC"]
    pools = babble_pools(speakers, voices)
    assert [[int(v[0]) for v in pool] for pool in pools] == [
        [3, 4, 5, 6],
        [3, 4, 5, 6],
        [1, 2, 5, 6],
        [1, 2, 5, 6],
        [1, 2, 3, 4],
        [1, 2, 3, 4],
    ]
    assert pools[0] is pools[1]  # one list per speaker, not per utterance
    flat = babble_pools(["clips"] * 3, voices[:3])  # one folder: speakers unknown
    assert [[int(v[0]) for v in pool] for pool in flat] == [[2, 3], [1, 3], [1, 2]]
    silent = babble_pools(speakers[:3], [np.zeros(3), np.array([0.0, 2.0, 0.0]), np.ones(3)])
    assert [[v.tolist() for v in pool] for pool in silent] == [[[1.0, 1.0, 1.0]]] * 2 + [[[2.0]]]


def test_babble_never_holds_the_speakers_own_voice(speakers):
    """Each speaker is a pure tone: the noise added to spkA's speech has power at spkB's and spkC's tones and
    none at spkA's own (bins of 1 Hz on a 1 s clip)."""
    dataset = speech_only(speakers, Config(cache_dir=""))
    noisy = noisy_waveforms(dataset, NoiseSpec("babble", snr_db=0.0, seed=1, talkers=4))
    for utterance, mixed in zip(dataset, noisy):
        speech = utterance.speech.numpy()
        spectrum = np.abs(np.fft.rfft(mixed - speech)) ** 2
        hz = np.fft.rfftfreq(len(speech), 1 / RATE)
        band = {s: spectrum[np.abs(hz - f) <= 20].sum() / spectrum.sum() for s, f in SPEAKER_TONES.items()}
        own = utterance.speaker
        assert band[own] < 1e-6, (utterance.id, band)
        assert sum(v for s, v in band.items() if s != own) > 0.9, (utterance.id, band)


def test_babble_with_nobody_else_to_draw_from_names_the_utterance(speakers, tmp_path):
    (tmp_path / "one.txt").write_text(f"{speakers.parent}/spkA/u0.wav|{speakers.parent}/spkA/u0.mp4|bin\n")
    with pytest.raises(NoiseError, match=r"no utterance of another speaker to draw from for 1 utterance\(s\): spkA/u0"):
        noisy_waveforms(speech_only(tmp_path / "one.txt", Config(cache_dir="")), NoiseSpec("babble"))


def test_fewer_babble_sources_than_talkers_is_warned_about(speakers):
    with pytest.warns(UserWarning, match=r"babble: 6 of 6 utterances .* fewer than 5 utterances"):
        noisy_waveforms(speech_only(speakers, Config(cache_dir="")), NoiseSpec("babble", talkers=5))


def test_noise_without_speech_says_how_to_load_it(clips, config):
    with pytest.raises(NoiseError, match="load the dataset with keep_speech=True \\(3 without, e.g. clips/u0\\)"):
        noisy_dataset(load(clips, config), NoiseSpec("white"), config)


# --- evaluation --------------------------------------------------------------------------------------------------
def test_table_averages_the_draws_of_each_snr(clips, checkpoint):
    table = evaluate_at_snrs(checkpoint, clips, [0.0, 10.0], noise="white", draws=2, seed=5)
    assert [s.snr_db for s in table.scores] == [0.0, 10.0] and (table.draws, table.seed) == (2, 5)
    assert table.loaded == "3 utterances loaded"
    for score in table.scores:
        single = [
            evaluate_checkpoint(checkpoint, clips, snr_db=score.snr_db, noise="white", noise_seed=seed)
            for seed in (5, 6)
        ]
        assert score.wer == pytest.approx((single[0]["wer"] + single[1]["wer"]) / 2, abs=1e-12)
        assert score.cer == pytest.approx((single[0]["cer"] + single[1]["cer"]) / 2, abs=1e-12)
        assert score.wer_std == pytest.approx(abs(single[0]["wer"] - single[1]["wer"]) / 2, abs=1e-12)
        assert single[0]["noise"] == f"white noise at {score.snr_db:g} dB SNR (seed 5)"


def test_cli_prints_one_wer_cer_line_per_snr(clips, checkpoint):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "evaluate.py"),
            "--checkpoint",
            str(checkpoint),
            "--manifest",
            str(clips),
            "--snr",
            "0",
            "10",
            "--noise",
            "white",
            "--draws",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = re.findall(r"^SNR +([+-]\d+\.\d) dB  WER (\d\.\d{4})  CER (\d\.\d{4})  \(std 0\.0000\)$", done.stdout, re.M)
    assert [snr for snr, _, _ in lines] == ["+0.0", "+10.0"]
    assert done.stdout.startswith("white noise, 1 draw(s) per SNR from seed 0; 3 utterances loaded\n")
