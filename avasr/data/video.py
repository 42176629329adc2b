"""Video files -> grayscale frames, and frame-rate conversion. The lip crops are cut from them by
`avasr.data.lips.load_lips`.

Decoding uses OpenCV's FFmpeg backend. Frame rates other than `config.fps` (e.g. 30 fps) are converted by
nearest-in-time frame selection before the lips are cropped.

Errors: an unreadable, corrupt or frame-less file raises `VideoError`, a video without a face `NoFaceError`
(a `VideoError`); both name the file. OpenCV's own warnings while a file is opened and read (`[ WARN...] ...
VIDEOIO(FFMPEG) ...`) are silenced: they would only come before that clearer error. A track's duration is
`len(track.crops) / config.fps` seconds, which the dataset compares with its audio to catch videos much shorter
than their audio.

A segment (start, end) in seconds keeps the frames from round(start * fps) up to, not including, round(end * fps)
(a manifest line with offsets, avasr.data.manifest); decoding stops at its end. A segment running past the last frame
is cut there; one that starts after it is an error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from avasr.data.manifest import segment_text
from avasr.errors import AvasrError

# FFmpeg's own log ("[mov,mp4,... @ 0x...] moov atom not found") bypasses OpenCV's logging API; OpenCV reads this
# once, at its first FFmpeg open. Quiet (AV_LOG_QUIET) unless the user asked otherwise: VideoError says it better.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class VideoError(AvasrError, ValueError):
    """A video that cannot give frames: missing, unreadable, corrupt, no frames, no frame rate. Names the file."""


def read_gray_frames(path: str | Path, segment: tuple[float, float] | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame (or those of `segment`, seconds) as grayscale. Returns frames shape = (T, H, W) uint8 and
    the source frame rate."""
    path = Path(path)
    with _opened(path) as capture:
        fps = capture.get(cv2.CAP_PROP_FPS)
        has_rate = math.isfinite(fps) and fps > 0
        if segment is not None and not has_rate:
            raise _no_frame_rate(path, fps)
        first, stop = (0, math.inf) if segment is None else (round(segment[0] * fps), round(segment[1] * fps))
        frames, index = [], 0
        while index < stop and capture.grab():  # grab() only demuxes and decodes: frames before `first` cost less
            if index >= first:
                ok, frame = capture.retrieve()
                if not ok:
                    break
                frames.append(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
            index += 1
    if not frames and index == 0:
        raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video)")
    if not has_rate:
        raise _no_frame_rate(path, fps)
    if not frames:
        raise VideoError(
            f"{path}: segment {segment_text(segment)} s starts after the video ends ({index} frames at {fps:g} fps)"
        )
    return np.stack(frames), float(fps)


def _no_frame_rate(path: Path, fps: float) -> VideoError:
    return VideoError(f"{path}: the container gives no frame rate (got {fps}); re-encode it with one")


def count_frames(path: str | Path) -> int:
    """The frames a video decodes to (without converting them); VideoError naming the file when it has none."""
    path = Path(path)
    with _opened(path) as capture:
        count = 0
        while capture.grab():
            count += 1
    if not count:
        raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video)")
    return count


@contextmanager
def _opened(path: Path) -> Iterator[cv2.VideoCapture]:
    """An open capture of `path` with OpenCV's warnings silenced; VideoError naming the file when it cannot open."""
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    with opencv_errors_only():
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)  # one decoder everywhere, not whatever CAP_ANY finds
        try:
            if not capture.isOpened():
                raise VideoError(f"{path}: cannot open the video (corrupt or not a video container)")
            yield capture
        finally:
            capture.release()


@contextmanager
def opencv_errors_only() -> Iterator[None]:
    """OpenCV logs errors only (or less, if set quieter) inside the block, then at its previous level again."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(min(previous, cv2.utils.logging.LOG_LEVEL_ERROR))  # lower levels are quieter
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def resample_frames(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Convert the frame rate by taking, for each output time, the nearest source frame (no blending).

    frames shape = (T, ...) -> shape = (round(T * dst_fps / src_fps), ...); the same array when the rates agree.
    """
    if not (src_fps > 0 and dst_fps > 0):
        raise ValueError(f"frame rates must be positive, got src_fps={src_fps}, dst_fps={dst_fps}")
    if src_fps == dst_fps:
        return frames
    count = max(1, round(len(frames) * dst_fps / src_fps))
    # frame k is shown at k / src_fps; output frame i at i / dst_fps takes the closest (ties go to the later one)
    nearest = np.floor(np.arange(count) * (src_fps / dst_fps) + 0.5).astype(np.int64)
    return frames[np.minimum(nearest, len(frames) - 1)]
