"""Lip ROI: a real portrait moved and scaled over time gives crops centred on its mouth; smoothing, gaps, borders."""

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib import cbook

from avasr.config import Config
from avasr.data.lips import (
    HAAR_CASCADE,
    MOUTH_BOX_SIDE,
    HaarLipCropper,
    LipTrack,
    MediaPipeLipCropper,
    NoFaceError,
    crop_boxes,
    default_cropper,
    load_lips,
    mediapipe_available,
    mouth_box_from_face,
    smooth_boxes,
)
from avasr.data.video import VideoError

PORTRAIT = "grace_hopper.jpg"  # a real frontal photograph shipped with matplotlib, 512 x 600
PORTRAIT_MOUTH = (267.0, 279.0)  # (x, y) of the centre of the closed lips in that photo, measured once by eye
PORTRAIT_FACE_WIDTH = 231  # width of the face box OpenCV's cascades find in the full-size photo
CANVAS = (192, 160)  # (width, height) of the synthetic video
BACKGROUND = 90
FRAMES = 50  # 2 s at 25 fps
TOLERANCE = 0.2  # the mouth must lie within 20 % of the crop's side from the crop's centre
SIZE = 64
LANDMARKER_ENV = "AVASR_FACE_LANDMARKER"  # path of a MediaPipe face_landmarker.task, never downloaded


def portrait() -> np.ndarray:
    return cv2.imread(str(cbook.get_sample_data(PORTRAIT, asfileobj=False)), cv2.IMREAD_GRAYSCALE)


def moving_face(
    count: int = FRAMES, noise: float = 0.0, canvas: tuple[int, int] = CANVAS, smallest: float = 0.22
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The portrait scaled from `smallest` to `smallest` + 0.16 and moved across and up-down on a plain canvas.

    Returns frames shape = (count, H, W) uint8, the mouth's true position shape = (count, 2), the scale (count,).
    """
    photo, rng = portrait(), np.random.default_rng(0)
    progress = np.linspace(0.0, 1.0, count)
    scales = smallest + 0.16 * progress
    mouths = np.stack([60 + 70 * progress, 70 + 30 * np.sin(np.pi * progress)], axis=1)
    frames = []
    for scale, (mx, my) in zip(scales, mouths):
        warp = np.float32([[scale, 0, mx - scale * PORTRAIT_MOUTH[0]], [0, scale, my - scale * PORTRAIT_MOUTH[1]]])
        frame = cv2.warpAffine(photo, warp, canvas, flags=cv2.INTER_AREA, borderValue=BACKGROUND).astype(float)
        frames.append(np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8))
    return np.stack(frames), mouths, scales


def mouth_offsets(track: LipTrack, mouths: np.ndarray) -> np.ndarray:
    """The true mouth's offset from each crop's centre, in crop sides. shape = (T, 2)"""
    return (mouths - track.boxes[:, :2]) / track.boxes[:, 2:3]


def reference_mouth() -> np.ndarray:
    """The central half of an ideal crop around the portrait's mouth: a template to find in the crops."""
    side = round(MOUTH_BOX_SIDE * PORTRAIT_FACE_WIDTH)
    ideal = cv2.resize(
        cv2.getRectSubPix(portrait(), (side, side), PORTRAIT_MOUTH), (SIZE, SIZE), interpolation=cv2.INTER_AREA
    )
    return ideal[SIZE // 4 : 3 * SIZE // 4, SIZE // 4 : 3 * SIZE // 4]


@pytest.mark.parametrize("detect_every", [1, 2, 3, 5])
def test_crops_follow_the_mouth_of_a_real_face(detect_every):
    frames, mouths, _ = moving_face()
    track = HaarLipCropper(detect_every=detect_every).crop(frames, SIZE, "portrait.mp4")
    assert track.crops.shape == (FRAMES, SIZE, SIZE) and track.crops.dtype == np.uint8
    assert np.abs(mouth_offsets(track, mouths)).max() < TOLERANCE
    report = track.report
    assert report.frames == FRAMES and report.searched == len({*range(0, FRAMES, detect_every), FRAMES - 1})
    assert report.detected >= 0.9 * report.searched
    assert report.detected + report.interpolated == FRAMES


def test_a_search_near_the_last_face_is_as_accurate_as_a_whole_frame_search():
    frames, mouths, scales = moving_face()
    cropper = HaarLipCropper()
    expected_sides = MOUTH_BOX_SIDE * PORTRAIT_FACE_WIDTH * scales
    for t in range(1, FRAMES):
        last = cropper.find_mouth(frames[t - 1])
        assert cropper._detect_near(cv2.equalizeHist(frames[t]), 1.0, last) is not None  # the near path is taken
        for box in (cropper.find_mouth(frames[t], last), cropper.find_mouth(frames[t])):
            assert np.abs((mouths[t] - box[:2]) / box[2]).max() < TOLERANCE, f"frame {t}: {box}"
            assert abs(box[2] / expected_sides[t] - 1) < 0.15, f"frame {t}: {box}"


def test_a_face_that_jumps_away_from_its_last_place_is_found_again():
    frames, mouths, _ = moving_face()
    cropper = HaarLipCropper()
    far = cropper.find_mouth(frames[0])
    box = cropper.find_mouth(frames[-1], near=far)  # 70 px right, the search region around frame 0 misses it
    assert box is not None and np.abs((mouths[-1] - box[:2]) / box[2]).max() < TOLERANCE


def test_small_face_in_a_large_frame_is_found():
    """GRID's frame size with a face 20-32 % of its height: the downscaling before detection must not lose it."""
    frames, mouths, _ = moving_face(canvas=(360, 288), smallest=0.25)
    track = HaarLipCropper().crop(frames, SIZE, "grid_size.mp4")
    assert track.report.detected >= 0.8 * track.report.searched
    assert np.abs(mouth_offsets(track, mouths)).max() < TOLERANCE


def test_crop_pixels_show_the_mouth_at_their_centre():
    """Independent of the boxes: the photo's own mouth patch is found near the centre of every crop."""
    frames, _, _ = moving_face()
    track = HaarLipCropper().crop(frames, SIZE, "portrait.mp4")
    template = reference_mouth()
    for t, crop in enumerate(track.crops):
        scores = cv2.matchTemplate(crop, template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (left, top) = cv2.minMaxLoc(scores)
        centred = SIZE // 4
        assert best > 0.6, f"frame {t}: mouth not recognisable (score {best:.2f})"
        assert max(abs(left - centred), abs(top - centred)) < TOLERANCE * SIZE, f"frame {t}: mouth at {left, top}"


def test_box_size_follows_the_face_scale():
    frames, _, scales = moving_face()
    track = HaarLipCropper().crop(frames, SIZE, "portrait.mp4")
    expected = MOUTH_BOX_SIDE * PORTRAIT_FACE_WIDTH * scales
    assert np.abs(track.boxes[:, 2] / expected - 1).max() < 0.15


def test_noisy_detections_give_a_track_without_jitter():
    """A still face under sensor noise: raw detections wobble, the smoothed crop box barely moves."""
    still, _, _ = moving_face(count=1)
    rng = np.random.default_rng(1)
    frames = np.stack(
        [np.clip(still[0] + rng.normal(0, 12, still[0].shape), 0, 255).astype(np.uint8) for _ in range(FRAMES)]
    )
    cropper = HaarLipCropper(detect_every=1)
    raw = np.array([cropper.find_mouth(frame) for frame in frames])
    track = cropper.crop(frames, SIZE, "still.mp4")
    raw_step = np.abs(np.diff(raw[:, :2], axis=0)).max()
    smooth_step = np.abs(np.diff(track.boxes[:, :2], axis=0)).max()
    assert raw_step > 1.0  # the test is meaningless unless detections do jitter
    assert smooth_step < 0.5 * raw_step and smooth_step < 1.0


def test_frames_without_a_face_are_interpolated_and_counted():
    frames, mouths, _ = moving_face()
    frames[20:30] = BACKGROUND  # the face leaves for 10 frames
    track = HaarLipCropper(detect_every=1).crop(frames, SIZE, "gap.mp4")
    assert track.report.detected <= FRAMES - 10 and track.report.interpolated >= 10
    inside = np.r_[0:20, 30:FRAMES]
    assert np.abs(mouth_offsets(track, mouths)[inside]).max() < TOLERANCE
    # across the gap the box moves straight from the last box before to the first after
    gap = track.boxes[19:31, 0]
    assert np.all(np.diff(gap) > 0)


def test_video_without_a_face_raises_no_face_error_naming_it():
    noise = np.random.default_rng(2).integers(0, 256, size=(10, 120, 160), dtype=np.uint8)  # searched: 0, 3, 6, 9
    with pytest.raises(NoFaceError, match="noise.mp4: no face found in any of the 4 searched frames \\(of 10\\)"):
        HaarLipCropper().crop(noise, SIZE, "noise.mp4")
    assert issubclass(NoFaceError, VideoError)


def test_real_face_video_file_at_30_fps(tmp_path):
    """End to end through a file: mp4v at 30 fps -> 25 fps crops on the mouth."""
    frames, mouths, _ = moving_face(count=36)  # 1.2 s at 30 fps
    path = tmp_path / "face.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, CANVAS, isColor=False)
    for frame in frames:
        writer.write(frame)
    writer.release()
    track = load_lips(path, Config(), HaarLipCropper())
    assert track.crops.shape == (30, Config().lip_size, Config().lip_size)
    kept = np.minimum(np.floor(np.arange(30) * 1.2 + 0.5).astype(int), 35)
    assert np.abs(mouth_offsets(track, mouths[kept])).max() < TOLERANCE
    assert track.report.path == str(path)


def test_smooth_boxes_drops_an_outlier_interpolates_and_holds_the_ends():
    boxes = np.full((12, 3), np.nan)
    boxes[2:10] = [[10.0, 20.0, 8.0]] * 8
    boxes[5] = [100.0, 100.0, 50.0]  # one false face far away
    smooth = smooth_boxes(boxes)
    np.testing.assert_allclose(smooth, [[10.0, 20.0, 8.0]] * 12)  # outlier gone, ends held
    line = np.full((9, 3), np.nan)
    line[0], line[8] = [0.0, 0.0, 10.0], [8.0, 16.0, 10.0]
    np.testing.assert_allclose(smooth_boxes(line)[2:7, 0], [2, 3, 4, 5, 6])  # linear, and the average keeps it
    with pytest.raises(ValueError):
        smooth_boxes(np.full((3, 3), np.nan))


def test_smooth_boxes_damps_frame_to_frame_zigzag():
    """The median keeps an alternating +-1 px wobble; the 5-frame moving average cuts it to +-0.2 px."""
    zigzag = np.zeros((20, 3))
    zigzag[:, 0] = (-1.0) ** np.arange(20)
    interior = np.arange(4, 16)  # away from the ends, where padding by repetition changes the median
    np.testing.assert_allclose(smooth_boxes(zigzag)[interior, 0], 0.2 * (-1.0) ** interior)


def test_crop_boxes_replicates_the_border_outside_the_frame():
    frame = np.tile(np.arange(0, 200, 10, dtype=np.uint8), (20, 1))  # value = 10 * column, shape = (20, 20)
    crops = crop_boxes(frame[None], np.array([[0.0, 10.0, 8.0]]), size=8)  # half the box left of the frame
    assert crops.shape == (1, 8, 8)
    np.testing.assert_array_equal(crops[0, :, :4], 0)  # columns left of the frame repeat column 0
    np.testing.assert_array_equal(crops[0, 0, 4:], [5, 15, 25, 35])  # sub-pixel: centres at x = 0.5, 1.5, ...


def test_the_mouth_box_is_half_a_face_wide_centred_across_it_and_on_the_lips_of_a_real_face():
    # across: a face box of pixel columns 100 ... 179 (edges [100, 180)) is centred on their mean, in pixel centres
    cx, _, side = mouth_box_from_face(100, 50, 80, 80)
    assert (cx, side) == (np.arange(100, 180).mean(), 80 / 2)
    # down: on the full-size portrait, the box from the face OpenCV finds is centred on the lips measured by eye
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / HAAR_CASCADE))
    (face,) = cascade.detectMultiScale(cv2.equalizeHist(portrait()), scaleFactor=1.1, minNeighbors=5)
    cx, cy, _ = mouth_box_from_face(*face)
    assert np.abs(np.subtract((cx, cy), PORTRAIT_MOUTH)).max() < 0.025 * face[2]


def test_haar_cropper_survives_pickling():
    frames, _, _ = moving_face(count=4)
    cropper = pickle.loads(pickle.dumps(HaarLipCropper(detect_every=3)))
    assert cropper.detect_every == 3
    assert cropper.crop(frames, SIZE, "x").report.detected == 2


def test_default_cropper_is_haar_and_shared():
    assert isinstance(default_cropper(Config()), HaarLipCropper)
    assert default_cropper(Config()) is default_cropper(Config(lip_size=32))  # the cascade is loaded once


def test_unknown_cascade_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no_such_cascade.xml"):
        HaarLipCropper(cascade="no_such_cascade.xml")


@pytest.mark.skipif(mediapipe_available(), reason="mediapipe is installed")
def test_mediapipe_cropper_without_the_package_is_a_clear_error(tmp_path):
    with pytest.raises(ImportError, match="optional `mediapipe` package"):
        MediaPipeLipCropper(tmp_path / "face_landmarker.task")


@pytest.mark.skipif(not mediapipe_available(), reason="mediapipe is not installed (optional)")
def test_mediapipe_cropper_without_its_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="face_landmarker.task: face landmarker model file not found"):
        MediaPipeLipCropper(tmp_path / "face_landmarker.task")


@pytest.mark.skipif(
    not (mediapipe_available() and os.environ.get(LANDMARKER_ENV)),
    reason=f"needs mediapipe and a face landmarker .task file named by ${LANDMARKER_ENV}",
)
def test_mediapipe_crops_follow_the_mouth_of_a_real_face():
    frames, mouths, _ = moving_face()
    track = MediaPipeLipCropper(os.environ[LANDMARKER_ENV]).crop(frames, SIZE, "portrait.mp4")
    assert track.report.detected >= 0.9 * track.report.searched
    assert np.abs(mouth_offsets(track, mouths)).max() < TOLERANCE
