"""Tiny in-memory utterances whose audio and lips really encode their transcript (for training-loop tests)."""

import torch

from avasr.config import AUDIO_TIME_DOWNSAMPLING, Config
from avasr.data.dataset import AVDataset, Utterance
from avasr.text import encode

FRAMES_PER_CHAR = 3
TRANSCRIPTS = ["bin blue", "lay red", "place at", "set green", "bin a now", "lay z", "set by", "place soon"]

TINY = Config(
    encoder_channels=(4, 8, 8),
    feature_dim=32,
    temporal_layers=2,
    dropout=0.0,
    label_smoothing=0.0,
    batch_size=4,
    lr=3e-3,
    epochs=2,
    patience=100,
    device="cpu",
    n_mels=40,
    lip_size=16,
)


def utterance(index: int, transcript: str, generator: torch.Generator, lip_size: int = 16) -> Utterance:
    """Each character lights one mel band and one lip-pixel row for FRAMES_PER_CHAR video frames, plus noise."""
    labels = encode(transcript)
    T = FRAMES_PER_CHAR * len(labels) + 2
    audio = 0.3 * torch.randn(40, AUDIO_TIME_DOWNSAMPLING * T, generator=generator)
    video = torch.randint(0, 40, (T, lip_size, lip_size), generator=generator, dtype=torch.uint8)
    for i, label in enumerate(labels):
        frames = slice(1 + FRAMES_PER_CHAR * i, 1 + FRAMES_PER_CHAR * (i + 1))
        audio[label % 40, AUDIO_TIME_DOWNSAMPLING * frames.start : AUDIO_TIME_DOWNSAMPLING * frames.stop] += 3.0
        video[frames, label % lip_size, :] = 255
    return Utterance(f"synth/{index}", "synth", audio, video, torch.tensor(labels), transcript)


def dataset(transcripts=TRANSCRIPTS, seed: int = 0) -> AVDataset:
    g = torch.Generator().manual_seed(seed)
    return AVDataset([utterance(i, t, g) for i, t in enumerate(transcripts)])
