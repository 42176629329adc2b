"""Lip regions of interest: grayscale frames -> a smoothed mouth box per frame -> lip_size x lip_size crops.

Pipeline of every cropper (`track_mouth`):

1. Find the mouth on every `detect_every`-th frame (and always on the last one). `HaarLipCropper` (the default)
   detects faces with OpenCV's Haar cascade (shipped with opencv-python-headless) on a histogram-equalised,
   downscaled frame, keeps the largest and takes a square box of a fixed fraction of it around the mouth's usual
   place. Faces narrower than MIN_FACE_FRACTION of the frame's shorter side are not searched. Once a face is
   found, the next search looks only near it and at nearly its size (tracking: a few cascade scales over a small
   region instead of every scale over the frame); where that finds nothing, and on every WHOLE_FRAME_EVERY-th
   search, the whole frame is searched.
   `MediaPipeLipCropper` uses MediaPipe's face landmarker and the lip landmarks instead; it needs the optional
   `mediapipe` package and a model file given by the user (nothing is ever downloaded).
2. Reject one-off false detections with a running median over the detections, linearly interpolate the box over
   frames without one (holding the first/last box at the ends), then smooth it with a centred moving average so
   the crops do not jitter (`smooth_boxes`).
3. Cut the box out of each frame with sub-pixel accuracy, replicating the border where the box leaves the frame,
   and resize it to `size` with INTER_AREA (`crop_boxes`).

Boxes are (centre x, centre y, side) in source pixels, with pixel (i, j) centred at x = i, y = j (OpenCV's
convention for `getRectSubPix` and `warpAffine`).

Policy for a video without any face: `NoFaceError` (a `VideoError`) naming the file. There is no centre-crop
fallback: a crop that is not the lips must not be passed off as lips. The dataset skips such a video and counts
it. Frames without a detection inside a video that has some are interpolated and counted in `LipReport`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from avasr.config import Config
from avasr.data.video import VideoError, read_gray_frames, resample_frames

# --- Haar face detection ---------------------------------------------------------------------------------------
# alt2 gave the fewest false and missed faces of OpenCV's frontal cascades on a sweep of scales and positions of
# a real portrait (196/200 found, mouth position spread 1.7 % of the face box against 4-6 % for `default`).
HAAR_CASCADE = "haarcascade_frontalface_alt2.xml"
SCALE_FACTOR = 1.1  # step between the cascade's search scales
MIN_NEIGHBORS = 5  # overlapping hits needed to accept a face: fewer gives false faces in textured backgrounds
MIN_FACE_FRACTION = 0.15  # smallest face searched, as a fraction of the frame's shorter side
# Frames are downscaled until the smallest searched face is this many pixels: the cascade (20 px window) still
# finds such faces, and detection cost grows with the image area (a 360x288 frame is searched at 267x213).
DETECTION_MIN_FACE_PX = 32
# Run the detector on every 3rd frame and interpolate between: heads move slowly (the built-in corpus sways at
# <= 0.8 Hz: its mouth moves < 1 % of the face width between searches, far inside the smoothing's reach).
DETECT_EVERY = 3
# --- tracking: where and at which sizes the next search looks once a face is known ------------------------------
TRACK_MARGIN = 0.25  # the search region is the last face box grown by this many face widths on every side
TRACK_SCALE_RANGE = 1.25  # faces between 1/1.25 and 1.25 times the last width: 5 cascade scales instead of ~20
# Every 16th search (about 2 s at 25 fps) looks at the whole frame again for the largest face: a false face found
# first, or a second, larger face that comes in, holds the track for 2 s at most. A whole-frame search costs ~10
# near ones: every 8th search took a 5 s clip's lips from ~120 to ~200 ms.
WHOLE_FRAME_EVERY = 16

# --- the mouth box inside the face box -------------------------------------------------------------------------
# The mouth's centre sits half-way across and about three quarters down a Haar face box (0.77 measured on
# matplotlib's grace_hopper.jpg). The square box is half the face wide: lips, their corners and the chin's top.
MOUTH_CENTRE_X = 0.5
MOUTH_CENTRE_Y = 0.76
MOUTH_BOX_SIDE = 0.5

# --- MediaPipe face landmarker (optional) ----------------------------------------------------------------------
LIP_CORNERS = (61, 291)  # left and right mouth corners in MediaPipe's 478-point face mesh
LIP_MIDDLES = (0, 17)  # top of the upper lip, bottom of the lower lip
MOUTH_WIDTH_TO_SIDE = 1.4  # mouth width is ~0.36 of a face box: 1.4 x width matches the Haar box's 0.5 x face

# --- temporal smoothing ----------------------------------------------------------------------------------------
OUTLIER_WINDOW = 5  # running median over this many detections: a single false face cannot move the box
SMOOTHING_FRAMES = 5  # centred moving average (0.2 s at 25 fps): removes jitter, no lag on steady motion

Box = tuple[float, float, float]  # centre x, centre y, side (pixels)


class NoFaceError(VideoError):
    """No face in any searched frame of a video; the message names the file. The dataset skips and counts it."""


@dataclass(frozen=True)
class LipReport:
    """What the cropper did on one video: every frame is either `detected` or `interpolated`."""

    path: str
    frames: int  # frames in the track (after frame-rate conversion)
    searched: int  # frames the detector ran on (every `detect_every`-th and the last)
    detected: int  # searched frames where a face was found
    interpolated: int  # frames whose box comes from neighbouring detections (= frames - detected)

    @property
    def detection_rate(self) -> float:
        return self.detected / self.searched


@dataclass(frozen=True, eq=False)
class LipTrack:
    crops: np.ndarray  # shape = (T_v, lip_size, lip_size) uint8
    boxes: np.ndarray  # shape = (T_v, 3) float: centre x, centre y, side of each crop in source pixels
    report: LipReport


class LipCropper(Protocol):
    def crop(self, frames: np.ndarray, size: int, where: str) -> LipTrack:
        """frames shape = (T, H, W) uint8 -> crops shape = (T, size, size); `where` names the video in errors."""
        ...


# --- the shared pipeline ---------------------------------------------------------------------------------------
def track_mouth(
    frames: np.ndarray,
    find_mouth: Callable[[np.ndarray, Box | None], Box | None],
    size: int,
    where: str,
    detect_every: int = DETECT_EVERY,
) -> LipTrack:
    """Find, smooth and crop the mouth. frames shape = (T, H, W) uint8; raises NoFaceError if never found.

    `find_mouth(frame, last)` gets the last box found (None at first): a cropper may search near it only."""
    if frames.ndim != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise VideoError(
            f"{where}: expected frames of shape (T, H, W) uint8 with T > 0, got {frames.shape} {frames.dtype}"
        )
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    count = len(frames)
    searched = sorted({*range(0, count, detect_every), count - 1})
    boxes = np.full((count, 3), np.nan)
    last = None
    for i, index in enumerate(searched):
        near = None if i % WHOLE_FRAME_EVERY == 0 else last  # now and then all of it: a false face cannot hold on
        box = find_mouth(frames[index], near)
        if box is not None:
            boxes[index] = last = box
    detected = int(np.isfinite(boxes[:, 0]).sum())
    if detected == 0:
        raise NoFaceError(
            f"{where}: no face found in any of the {len(searched)} searched frames "
            f"(of {count}); the video cannot give lip crops"
        )
    smoothed = smooth_boxes(boxes)
    report = LipReport(where, count, len(searched), detected, count - detected)
    return LipTrack(crop_boxes(frames, smoothed, size), smoothed, report)


def smooth_boxes(boxes: np.ndarray) -> np.ndarray:
    """Fill and smooth a box track. boxes shape = (T, 3) with NaN rows where nothing was found -> (T, 3) finite.

    Running median over the detections (drops one-off false faces), linear interpolation over the gaps (held
    constant before the first and after the last detection), then a centred moving average over frames.
    """
    found = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    if len(found) == 0:
        raise ValueError("no box to smooth: every row is NaN")
    robust = _running(boxes[found], OUTLIER_WINDOW, np.median)
    frames = np.arange(len(boxes))
    filled = np.stack([np.interp(frames, found, robust[:, k]) for k in range(boxes.shape[1])], axis=1)
    return _running(filled, SMOOTHING_FRAMES, np.mean)


def _running(values: np.ndarray, window: int, reduce) -> np.ndarray:
    """Centred running `reduce` along axis 0, edges padded by repetition. values shape = (N, C) -> (N, C)."""
    window = min(window, 2 * ((len(values) - 1) // 2) + 1)  # odd and no longer than the series
    half = window // 2
    padded = np.pad(values, ((half, half), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # shape = (N, C, window)
    return reduce(windows, axis=-1)


def crop_boxes(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """frames shape = (T, H, W) uint8, boxes shape = (T, 3) -> crops shape = (T, size, size) uint8.

    Parts of a box outside the frame repeat the frame's border pixels (no black bars for the model to learn).
    """
    crops = np.empty((len(frames), size, size), dtype=np.uint8)
    for t, (frame, (cx, cy, side)) in enumerate(zip(frames, boxes)):
        side_px = max(1, round(side))
        patch = cv2.getRectSubPix(frame, (side_px, side_px), (float(cx), float(cy)))
        crops[t] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return crops


def mouth_box_from_face(x: float, y: float, width: float, height: float) -> Box:
    """Haar face box (left, top, width, height; pixel edges) -> square mouth box (centre x, centre y, side)."""
    # -0.5: from edge coordinates (the box spans [x, x + width)) to pixel-centre coordinates
    return (x + MOUTH_CENTRE_X * width - 0.5, y + MOUTH_CENTRE_Y * height - 0.5, MOUTH_BOX_SIDE * width)


# --- croppers --------------------------------------------------------------------------------------------------
class HaarLipCropper:
    """The default: OpenCV Haar face cascade, mouth box at a fixed place in the face box."""

    def __init__(
        self,
        detect_every: int = DETECT_EVERY,
        min_face_fraction: float = MIN_FACE_FRACTION,
        cascade: str = HAAR_CASCADE,
    ):
        if detect_every < 1 or not 0 < min_face_fraction <= 1:
            raise ValueError(
                f"need detect_every >= 1 and 0 < min_face_fraction <= 1, got {detect_every}, {min_face_fraction}"
            )
        self.detect_every = detect_every
        self.min_face_fraction = min_face_fraction
        self.cascade = cascade  # a file name in cv2.data.haarcascades, or a path
        self._detector = _load_cascade(cascade)

    def crop(self, frames: np.ndarray, size: int, where: str) -> LipTrack:
        return track_mouth(frames, self.find_mouth, size, where, self.detect_every)

    def find_mouth(self, frame: np.ndarray, near: Box | None = None) -> Box | None:
        """frame shape = (H, W) uint8 -> the mouth box of the largest face, or None.

        `near`: the last mouth box found; the largest face around it at about its size is then taken, searched in
        the same downscaled, equalised image as a whole-frame search (so both give the same boxes)."""
        min_face = self.min_face_fraction * min(frame.shape)
        scale = min(1.0, DETECTION_MIN_FACE_PX / min_face)
        small = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        small = cv2.equalizeHist(small)
        face = None if near is None else self._detect_near(small, scale, near)
        if face is None:
            face = self._detect(small, min_face * scale, max_face=None)
        return None if face is None else mouth_box_from_face(*(face / scale))

    def _detect_near(self, small: np.ndarray, scale: float, near: Box) -> np.ndarray | None:
        """The largest face inside the last face box grown by TRACK_MARGIN, at about the last face's size.

        small: the frame downscaled by `scale` and equalised; returns (left, top, width, height) in its pixels."""
        cx, cy, side = near
        width = side / MOUTH_BOX_SIDE  # the face box the mouth box came from (Haar boxes are square)
        centre_x = cx + 0.5 + (0.5 - MOUTH_CENTRE_X) * width  # mouth (pixel centres) -> face box centre (edges)
        centre_y = cy + 0.5 + (0.5 - MOUTH_CENTRE_Y) * width
        reach = (0.5 + TRACK_MARGIN) * width
        height, frame_width = small.shape
        left, top = max(0, int((centre_x - reach) * scale)), max(0, int((centre_y - reach) * scale))
        right = min(frame_width, int(np.ceil((centre_x + reach) * scale)))
        bottom = min(height, int(np.ceil((centre_y + reach) * scale)))
        smallest, largest = width * scale / TRACK_SCALE_RANGE, width * scale * TRACK_SCALE_RANGE
        if right - left < smallest or bottom - top < smallest:
            return None  # the face was leaving the frame: search all of it
        face = self._detect(small[top:bottom, left:right], smallest, largest)
        return None if face is None else face + np.array([left, top, 0, 0])

    def _detect(self, image: np.ndarray, min_face: float, max_face: float | None) -> np.ndarray | None:
        """(left, top, width, height) of the largest face between min_face and max_face wide, in `image`'s pixels."""
        min_side = max(1, round(min_face))
        max_side = (0, 0) if max_face is None else (round(max_face),) * 2  # (0, 0): no upper bound
        faces = self._detector.detectMultiScale(
            image, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(min_side, min_side), maxSize=max_side
        )
        if len(faces) == 0:
            return None
        return max(faces, key=lambda f: f[2] * f[3]).astype(float)

    # cv2.CascadeClassifier cannot be pickled: DataLoader workers and Ray reload it from the file
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_detector"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._detector = _load_cascade(self.cascade)


def _load_cascade(cascade: str) -> cv2.CascadeClassifier:
    path = Path(cascade) if Path(cascade).is_file() else Path(cv2.data.haarcascades) / cascade
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise FileNotFoundError(
            f"{path}: cannot load the Haar cascade (not a file in {cv2.data.haarcascades} nor a readable cascade XML)"
        )
    return detector


def mediapipe_available() -> bool:
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        return False
    return True


class MediaPipeLipCropper:
    """MediaPipe face landmarker: the mouth box from the lip landmarks. Optional; needs the user's model file."""

    def __init__(self, model_path: str | Path, detect_every: int = DETECT_EVERY):
        if not mediapipe_available():
            raise ImportError("MediaPipeLipCropper needs the optional `mediapipe` package (pip install mediapipe)")
        if not Path(model_path).is_file():
            raise FileNotFoundError(
                f"{model_path}: face landmarker model file not found (a .task file from "
                f"MediaPipe's face landmarker page; nothing is downloaded at run time)"
            )
        self.model_path = str(model_path)
        self.detect_every = detect_every
        self._landmarker = _load_landmarker(self.model_path)

    def crop(self, frames: np.ndarray, size: int, where: str) -> LipTrack:
        return track_mouth(frames, self.find_mouth, size, where, self.detect_every)

    def find_mouth(self, frame: np.ndarray, near: Box | None = None) -> Box | None:
        """frame shape = (H, W) uint8 -> the mouth box from the lip landmarks, or None (`near` is not needed)."""
        import mediapipe as mp

        rgb = np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB))
        result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        if not result.face_landmarks:
            return None
        marks = result.face_landmarks[0]
        height, width = frame.shape
        points = np.array([(marks[i].x * width - 0.5, marks[i].y * height - 0.5) for i in LIP_CORNERS + LIP_MIDDLES])
        mouth_width = float(np.linalg.norm(points[1] - points[0]))
        cx, cy = points.mean(axis=0)
        return float(cx), float(cy), MOUTH_WIDTH_TO_SIDE * mouth_width

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_landmarker"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._landmarker = _load_landmarker(self.model_path)


def _load_landmarker(model_path: str):
    import mediapipe as mp

    options = mp.tasks.vision.FaceLandmarkerOptions(
        base_options=mp.tasks.BaseOptions(model_asset_path=model_path),
        running_mode=mp.tasks.vision.RunningMode.IMAGE,
        num_faces=1,
    )
    return mp.tasks.vision.FaceLandmarker.create_from_options(options)


@functools.lru_cache(maxsize=4)
def _cropper_for(model_path: str) -> LipCropper:
    return MediaPipeLipCropper(model_path) if model_path else HaarLipCropper()


def default_cropper(config: Config) -> LipCropper:
    """MediaPipe when the config names a face landmarker model (`face_landmarker_model`), else Haar. Cached."""
    return _cropper_for(config.face_landmarker_model)


def load_lips(
    path: str | Path, config: Config, cropper: LipCropper | None = None, segment: tuple[float, float] | None = None
) -> LipTrack:
    """Video file (or its `segment`, seconds) -> lip crops at `config.fps`, shape = (T_v, config.lip_size,
    config.lip_size) uint8, and a report.

    `cropper` defaults to `default_cropper(config)` (Haar). Raises VideoError / NoFaceError naming the file.
    """
    frames, fps = read_gray_frames(path, segment)
    frames = resample_frames(frames, fps, config.fps)
    return (cropper or default_cropper(config)).crop(frames, config.lip_size, where=str(path))
