import numpy as np
import pytest
import soundfile as sf
import torch

from avasr.config import Config
from avasr.data.audio import AudioError, load_log_mel

CONFIG = Config()


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_shape_and_frame_rate_at_16k(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0, 16000), 16000)
    mel = load_log_mel(tmp_path / "a.wav", CONFIG)
    assert mel.shape == (40, 16000 // 160 + 1) and mel.dtype == torch.float32
    assert torch.allclose(mel.mean(dim=1), torch.zeros(40), atol=1e-4)  # per-utterance, per-band standardised


def test_22050_hz_is_resampled_to_the_same_frame_count(tmp_path):
    sf.write(tmp_path / "a.wav", tone(2.0, 22050), 22050)
    assert load_log_mel(tmp_path / "a.wav", CONFIG).shape == (40, 201)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(0.5, 16000, 300.0), tone(0.5, 16000, 1000.0)  # two different channels
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    sf.write(tmp_path / "mean.wav", (left + right) / 2, 16000, subtype="FLOAT")
    sf.write(tmp_path / "left.wav", left, 16000, subtype="FLOAT")
    stereo = load_log_mel(tmp_path / "stereo.wav", CONFIG)
    assert torch.allclose(stereo, load_log_mel(tmp_path / "mean.wav", CONFIG), atol=1e-4)
    assert not torch.allclose(stereo, load_log_mel(tmp_path / "left.wav", CONFIG), atol=0.1)


def test_corrupt_empty_and_short_files_name_the_file(tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" * 10)
    with pytest.raises(AudioError, match="corrupt.wav: cannot read audio"):
        load_log_mel(tmp_path / "corrupt.wav", CONFIG)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: audio has no samples"):
        load_log_mel(tmp_path / "empty.wav", CONFIG)
    sf.write(tmp_path / "short.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(AudioError, match="short.wav: 100 samples is shorter than one 25.0 ms window"):
        load_log_mel(tmp_path / "short.wav", CONFIG)
