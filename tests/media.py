"""Small real media files for tests: a WAV tone and an MP4 of a real face (matplotlib's grace_hopper.jpg)."""

from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from matplotlib import cbook

FPS = 25
CANVAS = (160, 160)  # (width, height)
FACE_SCALE = 0.3  # the 512 x 600 portrait shrunk to about 150 x 180 px


def write_tone(path: Path, seconds: float, rate: int = 22050) -> Path:
    t = np.arange(int(round(seconds * rate))) / rate
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return path


def write_video(path: Path, frames: np.ndarray, fps: float = FPS) -> Path:
    """frames shape = (T, H, W) uint8 gray -> mp4v MP4."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames.shape[2:0:-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def face_frames(count: int) -> np.ndarray:
    """A real face drifting slowly across the canvas. shape = (count, H, W) uint8."""
    photo = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_GRAYSCALE)
    frames = []
    for i in range(count):
        shift = 4 * np.sin(i / 5)
        warp = np.float32([[FACE_SCALE, 0, 2 + shift], [0, FACE_SCALE, -10]])
        frames.append(cv2.warpAffine(photo, warp, CANVAS, flags=cv2.INTER_AREA, borderValue=90))
    return np.stack(frames)


def noise_frames(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (count, CANVAS[1], CANVAS[0]), dtype=np.uint8)


def write_clip(
    folder: Path, name: str, seconds: float, video_seconds: float | None = None, face: bool = True
) -> tuple[Path, Path]:
    """A (wav, mp4) pair; `video_seconds` differs from `seconds` to build a broken pair."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = round((video_seconds or seconds) * FPS)
    video = face_frames(frames) if face else noise_frames(frames)
    return write_tone(folder / f"{name}.wav", seconds), write_video(folder / f"{name}.mp4", video)
