"""Video decoding, frame-rate conversion and bad video files: every failure is a VideoError naming the file."""

import subprocess
import sys

import cv2
import numpy as np
import pytest

from avasr.config import Config
from avasr.data.lips import HaarLipCropper, LipReport, LipTrack, NoFaceError, load_lips
from avasr.data.video import VideoError, read_gray_frames, resample_frames

WIDTH, HEIGHT = 48, 32
CODEC_TOLERANCE = 4  # mp4v is lossy: a flat grey frame comes back within a few grey levels
STEP = 8  # frame k of a coded video is a flat frame of grey level STEP * k


def write_video(path, frames: np.ndarray, fps: float, codec: str = "mp4v") -> None:
    """frames shape = (T, H, W) uint8 -> a video file (empty T gives a container without frames)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (WIDTH, HEIGHT), isColor=False)
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def coded_frames(count: int) -> np.ndarray:
    """Flat frames whose grey level tells their index. shape = (count, HEIGHT, WIDTH)"""
    return np.repeat(STEP * np.arange(count, dtype=np.uint8), HEIGHT * WIDTH).reshape(count, HEIGHT, WIDTH)


def frame_indices(frames: np.ndarray) -> list[int]:
    return [round(level) for level in frames.mean(axis=(1, 2)) / STEP]


def test_read_gray_frames_returns_every_frame_and_the_rate(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, coded_frames(20), fps=25.0)
    frames, fps = read_gray_frames(path)
    assert frames.shape == (20, HEIGHT, WIDTH) and frames.dtype == np.uint8
    assert fps == 25.0
    assert np.abs(frames.astype(int) - coded_frames(20)).max() <= CODEC_TOLERANCE


def test_colour_video_is_read_as_gray(tmp_path):
    path = tmp_path / "colour.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (WIDTH, HEIGHT))
    for _ in range(3):
        writer.write(np.full((HEIGHT, WIDTH, 3), (200, 100, 50), np.uint8))  # BGR
    writer.release()
    frames, _ = read_gray_frames(path)
    expected = 0.114 * 200 + 0.587 * 100 + 0.299 * 50  # ITU-R BT.601 luma, as cv2.COLOR_BGR2GRAY
    assert frames.shape == (3, HEIGHT, WIDTH) and abs(frames.mean() - expected) <= CODEC_TOLERANCE


def test_30_fps_file_becomes_25_fps_with_the_nearest_frames(tmp_path):
    path = tmp_path / "thirty.mp4"
    write_video(path, coded_frames(30), fps=30.0)
    frames, fps = read_gray_frames(path)
    converted = resample_frames(frames, fps, 25.0)
    assert fps == 30.0 and converted.shape == (25, HEIGHT, WIDTH)
    # output frame i (time i/25) takes source frame round(1.2 i): 0 1 2 4 5 6 7 8 10 ...
    assert frame_indices(converted) == [int(np.floor(1.2 * i + 0.5)) for i in range(25)]


@pytest.mark.parametrize(
    ("count", "src", "dst", "expected"),
    [
        (5, 25.0, 25.0, [0, 1, 2, 3, 4]),
        (6, 30.0, 25.0, [0, 1, 2, 4, 5]),
        (3, 12.5, 25.0, [0, 1, 1, 2, 2, 2]),  # ties go to the later frame; past the end the last is held
        (10, 50.0, 25.0, [0, 2, 4, 6, 8]),
        (1, 30.0, 25.0, [0]),
    ],
)
def test_resample_frames_picks_the_nearest_frame_in_time(count, src, dst, expected):
    frames = np.arange(count).reshape(count, 1, 1)
    assert resample_frames(frames, src, dst).ravel().tolist() == expected


def test_resample_frames_refuses_non_positive_rates():
    with pytest.raises(ValueError, match="frame rates must be positive"):
        resample_frames(np.zeros((3, 2, 2)), 0.0, 25.0)


def test_missing_file_is_a_video_error(tmp_path):
    with pytest.raises(VideoError, match="absent.mp4: no such video file"):
        read_gray_frames(tmp_path / "absent.mp4")


def test_corrupt_file_is_a_video_error_naming_it(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match="corrupt.mp4: cannot open the video"):
        read_gray_frames(path)


def test_opencv_keeps_quiet_about_a_corrupt_file_and_only_our_error_shows(tmp_path):
    """OpenCV writes its `[ WARN:0@0.086] global cap.cpp:212 open VIDEOIO(FFMPEG) ...` from C++: only the
    stderr of a process of its own shows it."""
    path = tmp_path / "x.mp4"
    path.write_bytes(b"\x00\x00\x00\x10ftypisom" + np.random.default_rng(0).bytes(4096))  # an MP4 with no moov
    script = (
        "import sys\nfrom avasr.data.video import VideoError, read_gray_frames\n"
        "try:\n    read_gray_frames(sys.argv[1])\nexcept VideoError as e:\n    print(e, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert f"{path}: cannot open the video (corrupt or not a video container)\n" in done.stderr
    assert "VIDEOIO" not in done.stderr and "[ WARN" not in done.stderr, done.stderr
    assert "moov atom" not in done.stderr, done.stderr  # FFmpeg's own log


def test_opencv_logs_at_its_previous_level_after_a_corrupt_file(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    try:
        with pytest.raises(VideoError):
            read_gray_frames(path)
        assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_FATAL
    finally:
        cv2.utils.logging.setLogLevel(previous)


def test_truncated_file_is_a_video_error_naming_it(tmp_path):
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    write_video(whole, coded_frames(20), fps=25.0)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # mp4v keeps its index at the end
    with pytest.raises(VideoError, match="cut.mp4: cannot open the video"):
        read_gray_frames(cut)


@pytest.mark.parametrize(
    ("name", "codec", "problem"),
    [
        ("empty.mp4", "mp4v", "cannot open the video"),  # FFmpeg refuses an mp4 without frames at once
        ("empty.avi", "MJPG", "no frame could be decoded"),  # an AVI without frames opens, then gives none
    ],
)
def test_zero_frame_video_is_a_video_error_naming_it(tmp_path, name, codec, problem):
    path = tmp_path / name
    write_video(path, coded_frames(0), fps=25.0, codec=codec)
    assert path.stat().st_size > 0  # a container exists, with no frame in it
    with pytest.raises(VideoError, match=f"{name}: {problem}"):
        read_gray_frames(path)


def test_video_without_a_face_is_a_no_face_error_naming_it(tmp_path):
    path = tmp_path / "noise.mp4"
    noise = np.random.default_rng(1).integers(0, 256, size=(12, HEIGHT, WIDTH), dtype=np.uint8)
    write_video(path, noise, fps=25.0)
    with pytest.raises(NoFaceError, match="noise.mp4: no face found"):
        load_lips(path, Config(), HaarLipCropper())


def test_load_lips_gives_a_track_whose_length_tells_the_duration(tmp_path):
    """The dataset compares len(crops) / fps with the audio: a 1.2 s video at 30 fps gives 30 frames at 25 fps."""

    class WholeFrameCropper:  # a stand-in whose output is easy to predict: no face detection involved
        def crop(self, frames, size, where):
            crops = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
            boxes = np.zeros((len(frames), 3))
            return LipTrack(crops, boxes, LipReport(where, len(frames), len(frames), len(frames), 0))

    path = tmp_path / "short.mp4"
    write_video(path, coded_frames(30)[np.arange(36) % 30], fps=30.0)
    track = load_lips(path, Config(), WholeFrameCropper())
    assert track.crops.shape == (30, Config().lip_size, Config().lip_size)
    assert len(track.crops) / Config().fps == pytest.approx(1.2)
    assert track.report.path == str(path)


def test_decoding_does_not_depend_on_the_lip_cropper():
    """video.py decodes; lips.py crops and imports it, never the other way round (no import circle)."""
    probe = "import sys, avasr.data.video; print('avasr.data.lips' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
