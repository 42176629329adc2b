"""A talking face: a portrait whose mouth follows a phoneme sequence through visemes.

A `Portrait` is a frontal face without lips and its landmarks: the photograph that matplotlib ships
(`grace_hopper.jpg`, its lips inpainted away once; landmarks measured once on it, named constants below) or a
generated face (`avasr.corpus.faces`). Every frame draws a mouth (lips, dark opening, teeth, tongue) whose
opening, width, rounding and teeth follow the visemes with smooth coarticulation, lowers the jaw with the opening,
closes the eyelids for blinks, and moves the head a little. The mouth's proportions and colour belong to the
portrait; each speaker has its own face position, scale and lighting (`FaceStyle`).

Phoneme names are espeak-ng's mnemonics or the ARPAbet of festival and flite; both map onto the same visemes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import matplotlib.cbook
import numpy as np

from avasr.corpus.espeak import Phoneme

PHOTO_NAME = "grace_hopper.jpg"
FRAME_SIZE = 160  # frames are FRAME_SIZE x FRAME_SIZE, BGR uint8

# --- landmarks on the photo (pixels) ----------------------------------------------------------------------------
# The mouth's geometry below is given at this photo's scale (a face box of FACE_BOX_SIZE pixels) and scaled with
# the face box of every portrait.
FACE_CENTER = (266.0, 216.0)  # centre of the Haar face box (155, 105)-(377, 327)
FACE_BOX_SIZE = 222.0  # side of that box
MOUTH_CENTER = (265.0, 279.0)  # middle of the closed lips
MOUTH_HALF_WIDTH = 37.0  # corner to centre
LIP_AXES = (43, 13)  # half-axes of the ellipse around the photo's lips that is inpainted away
EYE_CENTERS = ((221.0, 190.0), (307.0, 186.0))  # left, right (in the image)
EYE_AXES = (12.0, 6.5)
LID_SAMPLE_ABOVE = 3.0  # the closed lid takes the colour of the skin this far above the eye
CHIN_Y = 330.0  # the jaw shift fades out here
LIP_BGR = (95.0, 105.0, 200.0)
MOUTH_INSIDE_BGR = (55.0, 50.0, 110.0)
TEETH_BGR = (200.0, 215.0, 225.0)
TONGUE_BGR = (110.0, 110.0, 190.0)
LASH_BGR = (40, 40, 60)
LASH_WIDTH = 0.9  # relative to the eye's half-width

# --- mouth geometry, in photo pixels at the photo's scale (a face box of FACE_BOX_SIZE) ---------------------------
MAX_OPENING = 25.0  # lip gap at open = 1 (a third of the mouth width); bigger dark holes defeat the Haar cascade
UPPER_LIP = 6.0  # lip thickness
LOWER_LIP = 8.0
UPPER_LIP_TRAVEL = 0.3  # the upper lip rises by this part of the gap; the lower lip and the jaw drop the rest
LIP_CORNER = 3.0  # lips reach this far beyond the opening's corners
ROUNDED_LIP_GROWTH = 0.3  # rounded lips are this much thicker
ROUNDED_NARROWING = 0.25  # ... and their opening this much narrower than the lips
SEAM = 0.9  # half-height of the dark line between closed lips ...
SEAM_WIDTH = 0.95  # ... and its half-width relative to the mouth's
TEETH_DEPTH = 8.0  # height of the visible upper teeth at teeth = 1 ...
TEETH_WIDTH = 0.85  # ... and their half-width relative to the opening's
TONGUE_WIDTH = 0.5  # tongue tip half-width relative to the opening's at tongue = 1 ...
TONGUE_HEIGHT = 0.35  # ... and its half-height relative to the gap
MIN_VISIBLE = 0.05  # teeth or tongue below this are not drawn
MOUTH_REGION_HALF = 60.0  # drawing happens inside this square around the mouth
JAW_HALF_WIDTH = 62.0  # the region that moves with the jaw
JAW_FADE = 3.0  # the jaw shift fades out over the last third above CHIN_Y
SUBPIXEL_BITS = 4  # cv2 drawing with fractional coordinates
SUBPIXEL = 1 << SUBPIXEL_BITS
MIN_GAP_PIXELS = 0.5  # below this the lips count as closed

# --- visemes: (open, width, round, teeth, tongue), dominance ---------------------------------------------------
# open: lip gap 0..1; width: mouth width relative to rest; round: lip protrusion/rounding 0..1;
# teeth: upper teeth shown 0..1 (1 with a tiny gap = lower lip under the teeth); tongue: tongue tip shown 0..1.
# Dominance: how strongly a phoneme imposes its shape on its neighbours (lips must close for p/b/m).
MOUTH_PARAMETERS = ("open", "width", "round", "teeth", "tongue")


@dataclass(frozen=True)
class Viseme:
    shape: tuple[float, float, float, float, float]  # MOUTH_PARAMETERS
    dominance: float


VISEMES: dict[str, Viseme] = {
    "rest": Viseme((0.0, 1.0, 0.0, 0.0, 0.0), 0.6),
    "bilabial": Viseme((0.0, 0.95, 0.1, 0.0, 0.0), 10.0),  # p b m: lips pressed shut
    "labiodental": Viseme((0.12, 1.0, 0.0, 1.0, 0.0), 6.0),  # f v: lower lip on the upper teeth
    "dental": Viseme((0.22, 1.0, 0.0, 0.8, 1.0), 2.0),  # th: tongue between the teeth
    "alveolar": Viseme((0.2, 1.02, 0.0, 0.7, 0.3), 1.0),  # t d n l s z
    "postalveolar": Viseme((0.22, 0.8, 0.6, 0.8, 0.0), 1.8),  # sh zh ch j: lips pushed forward
    "velar": Viseme((0.35, 1.0, 0.0, 0.3, 0.0), 0.8),  # k g ng h: shaped by the neighbours
    "approximant": Viseme((0.22, 0.72, 0.7, 0.2, 0.0), 1.5),  # r
    "rounded": Viseme((0.28, 0.58, 1.0, 0.0, 0.0), 2.0),  # w u oo: small round opening
    "open": Viseme((0.8, 1.05, 0.0, 0.4, 0.0), 1.2),  # a ah
    "open_rounded": Viseme((0.65, 0.75, 0.7, 0.2, 0.0), 1.3),  # o aw
    "mid": Viseme((0.55, 1.08, 0.0, 0.6, 0.0), 1.0),  # e, schwa, er
    "spread": Viseme((0.28, 1.22, 0.0, 0.9, 0.0), 1.2),  # i ee y: lips spread, teeth showing
}

# espeak-ng mnemonics (English) -> viseme. Modifiers such as "#", "2", ";", "[" are stripped first.
PHONEME_VISEMES: dict[str, str] = {
    **dict.fromkeys(["_", "_:", "_!", "_^", "?"], "rest"),
    **dict.fromkeys(["p", "b", "m"], "bilabial"),
    **dict.fromkeys(["f", "v"], "labiodental"),
    **dict.fromkeys(["T", "D"], "dental"),
    **dict.fromkeys(["t", "d", "n", "l", "s", "z", "@L", "t2", "d2", "n-", "l/", "L"], "alveolar"),
    **dict.fromkeys(["S", "Z", "tS", "dZ"], "postalveolar"),
    **dict.fromkeys(["k", "g", "N", "h", "x"], "velar"),
    **dict.fromkeys(["r", "r-", "3:", "3"], "approximant"),
    **dict.fromkeys(["w", "u:", "U", "U@", "u", "uw"], "rounded"),
    **dict.fromkeys(["a", "A:", "aI", "aU", "aa", "V", "A", "A@"], "open"),
    **dict.fromkeys(["0", "O", "O:", "O@", "o@", "Q", "oU", "OI", "o", "o:"], "open_rounded"),
    **dict.fromkeys(["E", "@", "a#", "e@", "eI", "e", "@2", "@5"], "mid"),
    # ";" is espeak's palatal glide between two vowels ("p eight" -> p i: ; eI)
    **dict.fromkeys(["i:", "I", "i", "i@", "I@", "y", "j", ";"], "spread"),
    # ARPAbet (festival, flite), where it is not already espeak's: "y" is the glide in both, "ax" the schwa
    **dict.fromkeys(["pau", "h#", "brth"], "rest"),
    **dict.fromkeys(["dh", "th"], "dental"),
    **dict.fromkeys(["sh", "zh", "ch", "jh"], "postalveolar"),
    **dict.fromkeys(["ng", "hh"], "velar"),
    **dict.fromkeys(["er", "axr"], "approximant"),
    **dict.fromkeys(["uw", "uh"], "rounded"),
    **dict.fromkeys(["aa", "ae", "ay", "aw"], "open"),
    **dict.fromkeys(["ao", "ow", "oy"], "open_rounded"),
    **dict.fromkeys(["eh", "ey", "ax", "ah"], "mid"),
    **dict.fromkeys(["iy", "ih"], "spread"),
}
UNKNOWN_VISEME = "mid"  # a phoneme missing from the table gets a neutral half-open mouth
_VOWEL_FALLBACK = {"a": "open", "e": "mid", "i": "spread", "o": "open_rounded", "u": "rounded", "@": "mid"}
_MODIFIERS = "#2;[/-!^"

# --- motion -----------------------------------------------------------------------------------------------------
COARTICULATION_MS = 30.0  # sigma of a phoneme's influence beyond its own span (anticipation, carry-over)
EXPOSURE_SAMPLES = 4  # mouth shapes averaged over a frame's 40 ms: a 20 ms /b/ still shows
BLINKS_PER_SECOND = 0.35  # people blink every few seconds
BLINK_MS = (120.0, 220.0)  # duration range
HEAD_ANGLE_DEG = 2.5  # peak head rotation
HEAD_SHIFT = 0.03  # peak head translation, fraction of the face box
HEAD_ZOOM = 0.02  # peak change of scale
HEAD_FREQUENCIES_HZ = (0.15, 0.8)  # slow sway
LIGHT_GAIN_LIMITS = (0.2, 2.0)  # the lighting gradient never blacks out or doubles a pixel beyond these


@dataclass(frozen=True)
class FaceStyle:
    """One speaker's face: which portrait, where, how big and how lit. Sizes in output pixels."""

    identity: str  # the portrait's name (avasr.corpus.faces)
    face_size: float  # side of the face box in the frame
    center: tuple[float, float]  # face-box centre in the frame
    light_angle: float  # radians in image coordinates (y down): the side the light comes from; 3 pi / 2 = above
    light_strength: float  # 0 = flat; 0.4 = one side 40 % brighter than the middle
    brightness: float  # overall gain


@dataclass(frozen=True, eq=False)
class Portrait:
    """A frontal face without lips, and where its features are. Points (x, y) and sizes in its own pixels."""

    name: str
    image: np.ndarray  # shape = (H, W, 3) uint8 BGR
    face_center: tuple[float, float]  # centre of its Haar face box
    face_box_size: float  # side of that box
    mouth_center: tuple[float, float]  # middle of the closed lips
    mouth_half_width: float  # corner to centre
    eye_centers: tuple[tuple[float, float], tuple[float, float]]  # left, right (in the image)
    eye_axes: tuple[float, float]
    chin_y: float  # the jaw shift fades out here
    jaw_half_width: float  # the region that moves with the jaw
    lip_bgr: tuple[float, float, float]
    lip_thickness: float  # relative to the photo's lips
    articulation: float  # how far this face opens its mouth (1 = the viseme table)

    def rest_mouth_in_frame(self, style: FaceStyle) -> tuple[float, float]:
        """Where the closed mouth is in a frame without head motion: (x, y) in output pixels."""
        scale = style.face_size / self.face_box_size
        return tuple(c + (m - f) * scale for c, m, f in zip(style.center, self.mouth_center, self.face_center))


REST_MOUTH = VISEMES["rest"].shape


def photo_portrait() -> Portrait:
    """matplotlib's photograph of Grace Hopper with its lips inpainted away."""
    return Portrait(
        name="hopper",
        image=load_photo(),
        face_center=FACE_CENTER,
        face_box_size=FACE_BOX_SIZE,
        mouth_center=MOUTH_CENTER,
        mouth_half_width=MOUTH_HALF_WIDTH,
        eye_centers=EYE_CENTERS,
        eye_axes=EYE_AXES,
        chin_y=CHIN_Y,
        jaw_half_width=JAW_HALF_WIDTH,
        lip_bgr=LIP_BGR,
        lip_thickness=1.0,
        articulation=1.0,
    )


def neutral_style(portrait: Portrait) -> FaceStyle:
    """The portrait at its own scale, unlit: for measuring it."""
    return FaceStyle(portrait.name, portrait.face_box_size, portrait.face_center, 0.0, 0.0, 1.0)


# --- the photo ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def load_photo() -> np.ndarray:
    """The photo with its own lips inpainted away. shape = (600, 512, 3) uint8 BGR."""
    path = matplotlib.cbook.get_sample_data(PHOTO_NAME, asfileobj=False)
    photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if photo is None:
        raise FileNotFoundError(f"{path}: cannot read matplotlib's sample photo {PHOTO_NAME}")
    lips = np.zeros(photo.shape[:2], np.uint8)
    cv2.ellipse(lips, _int_point(MOUTH_CENTER), LIP_AXES, 0, 0, 360, 255, -1)
    lipless = cv2.inpaint(photo, lips, 7, cv2.INPAINT_TELEA)
    return _smooth_inside(lipless, lips)


def _smooth_inside(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blur the inpainted patch so that no streaks of the old lips remain."""
    soft = cv2.GaussianBlur(mask, (0, 0), 3).astype(np.float32)[..., None] / 255.0
    blurred = cv2.GaussianBlur(image, (0, 0), 4)
    return (image * (1 - soft) + blurred * soft).astype(np.uint8)


def _int_point(p: tuple[float, float]) -> tuple[int, int]:
    return round(p[0]), round(p[1])


def _fixed(value: float) -> int:
    return round(value * SUBPIXEL)


# --- visemes and coarticulation -----------------------------------------------------------------------------------
def base_phoneme(phoneme: str) -> str:
    """The mnemonic without espeak's variant marks: "aI2" -> "aI", "t#" -> "t"; ";" and "_:" stay."""
    return phoneme if phoneme in PHONEME_VISEMES else (phoneme.rstrip(_MODIFIERS) or phoneme)


def viseme_of(phoneme: str) -> str:
    """The viseme of an espeak-ng mnemonic (modifiers stripped; unknown vowels by their first letter)."""
    stripped = base_phoneme(phoneme)
    if stripped in PHONEME_VISEMES:
        return PHONEME_VISEMES[stripped]
    if stripped.startswith("_"):
        return "rest"
    return _VOWEL_FALLBACK.get(stripped[0].lower(), UNKNOWN_VISEME)


def mouth_track(phonemes: tuple[Phoneme, ...] | list[Phoneme], n_frames: int, fps: float) -> np.ndarray:
    """Coarticulated mouth parameters, averaged over each frame's exposure. shape = (n_frames, 5).

    A dominance model of coarticulation: each phoneme pulls the mouth towards its viseme with its dominance
    inside its own span and a Gaussian fall-off (COARTICULATION_MS) outside it, so lips close for a short /b/
    between vowels while a /k/ takes the shape of its neighbours, and the mouth moves smoothly.
    """
    if not phonemes:
        return np.tile(np.array(VISEMES["rest"].shape, np.float32), (n_frames, 1))
    visemes = [VISEMES[viseme_of(p.name)] for p in phonemes]
    shapes = np.array([v.shape for v in visemes], np.float64)  # (P, 5)
    dominance = np.array([v.dominance for v in visemes])
    starts = np.array([p.start_ms for p in phonemes], np.float64)
    ends = np.array([p.end_ms for p in phonemes], np.float64)
    offsets = (np.arange(EXPOSURE_SAMPLES) + 0.5) / EXPOSURE_SAMPLES
    times = ((np.arange(n_frames)[:, None] + offsets).reshape(-1)) * 1000.0 / fps  # (T * S,)
    outside = np.maximum(starts - times[:, None], 0) + np.maximum(times[:, None] - ends, 0)  # (T * S, P)
    weights = dominance * np.exp(-0.5 * (outside / COARTICULATION_MS) ** 2) + 1e-12
    track = (weights @ shapes) / weights.sum(axis=1, keepdims=True)
    return track.reshape(n_frames, EXPOSURE_SAMPLES, -1).mean(axis=1).astype(np.float32)


def blink_track(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure per frame, 0 open .. 1 shut. shape = (n_frames,)."""
    closure = np.zeros(n_frames, np.float32)
    duration_s = n_frames / fps
    n_blinks = rng.poisson(BLINKS_PER_SECOND * duration_s)
    times = (np.arange(n_frames) + 0.5) / fps
    for _ in range(n_blinks):
        centre = rng.uniform(0, duration_s)
        half = rng.uniform(*BLINK_MS) / 2000.0
        closure = np.maximum(closure, np.clip(1 - np.abs(times - centre) / half, 0, 1))
    return closure


def head_track(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Small smooth head motion per frame: (dx, dy) as fractions of the face box, angle (deg), zoom.

    shape = (n_frames, 4). A sum of two slow sinusoids with random phases per component.
    """
    times = np.arange(n_frames)[:, None] / fps
    peaks = np.array([HEAD_SHIFT, HEAD_SHIFT, HEAD_ANGLE_DEG, HEAD_ZOOM])
    track = np.zeros((n_frames, 4), np.float32)
    for k in range(4):
        freqs = rng.uniform(*HEAD_FREQUENCIES_HZ, size=2)
        phases = rng.uniform(0, 2 * np.pi, size=2)
        track[:, k] = peaks[k] * 0.5 * np.sin(2 * np.pi * freqs * times + phases).sum(axis=1)
    return track


# --- rendering ----------------------------------------------------------------------------------------------------
class FaceRenderer:
    """Renders frames of one speaker's face: `render(mouth, blink, head)` -> (FRAME_SIZE, FRAME_SIZE, 3) uint8."""

    def __init__(self, portrait: Portrait, style: FaceStyle):
        self.portrait, self.style = portrait, style
        self.scale = style.face_size / portrait.face_box_size  # portrait pixels -> output pixels
        self.unit = style.face_size / FACE_BOX_SIZE  # the mouth geometry's photo pixels -> output pixels
        self.base = cv2.resize(portrait.image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
        self.colors = {
            "lip": portrait.lip_bgr,
            "inside": MOUTH_INSIDE_BGR,
            "teeth": TEETH_BGR,
            "tongue": TONGUE_BGR,
        }
        self.eyelid_colors = [self._eyelid_color(c) for c in portrait.eye_centers]
        self.light = _light_field(style)

    def _at_scale(self, point: tuple[float, float]) -> tuple[float, float]:
        return point[0] * self.scale, point[1] * self.scale

    def _eyelid_color(self, eye: tuple[float, float]) -> tuple[float, ...]:
        """Skin just above the eye: the colour of a closed lid."""
        above = self.portrait.eye_axes[1] + LID_SAMPLE_ABOVE * self.portrait.face_box_size / FACE_BOX_SIZE
        x, y = (round(v) for v in self._at_scale((eye[0], eye[1] - above)))
        patch = self.base[max(y - 1, 0) : y + 2, max(x - 3, 0) : x + 4]  # 3 x 7 pixels
        return tuple(patch.reshape(-1, 3).mean(axis=0).tolist())

    def render(self, mouth: np.ndarray, blink: float, head: np.ndarray) -> np.ndarray:
        """mouth: shape = (5,) MOUTH_PARAMETERS; blink: 0..1; head: shape = (4,) from `head_track`."""
        image = self.draw_static(mouth)
        if blink > 0:
            for eye, color in zip(self.portrait.eye_centers, self.eyelid_colors):
                self._draw_eyelid(image, eye, blink, color)
        return self._place(image, head)

    def draw_static(self, mouth: np.ndarray) -> np.ndarray:
        """The scaled portrait with this mouth (and its jaw), before head motion, placement and light."""
        image = self.base.copy()
        gap = MAX_OPENING * self.unit * self.portrait.articulation * float(mouth[0])
        self._drop_jaw(image, gap * (1 - UPPER_LIP_TRAVEL))
        self._draw_mouth(image, mouth, gap)
        return image

    def _draw_mouth(self, image: np.ndarray, mouth: np.ndarray, gap: float) -> None:
        """Lips, then the opening with teeth and tongue; `gap` is the lip gap in scaled pixels."""
        _open, width, round_, teeth, tongue = (float(v) for v in mouth)
        s = self.unit
        roi, (cx, cy) = _region(image, self._at_scale(self.portrait.mouth_center), MOUTH_REGION_HALF * s)
        half_width = self.portrait.mouth_half_width * self.scale * width
        pout = 1 + ROUNDED_LIP_GROWTH * round_  # protruded lips look fuller
        upper, lower = (t * s * self.portrait.lip_thickness * pout for t in (UPPER_LIP, LOWER_LIP))
        top = cy - gap * UPPER_LIP_TRAVEL  # the opening spans top .. top + gap
        lips_centre = (cx, top + gap / 2 + (lower - upper) / 2)
        lips_axes = (half_width + LIP_CORNER * s, gap / 2 + (upper + lower) / 2)
        self._ellipse(roi, lips_centre, lips_axes, self.colors["lip"])
        if gap < MIN_GAP_PIXELS:  # closed: only a dark seam between the lips
            self._ellipse(roi, (cx, top), (half_width * SEAM_WIDTH, SEAM * s), self.colors["inside"])
            return
        centre, axes = (cx, top + gap / 2), (half_width * (1 - ROUNDED_NARROWING * round_), gap / 2)
        mouth_layer = roi.copy()
        self._ellipse(mouth_layer, centre, axes, self.colors["inside"])
        if teeth > MIN_VISIBLE:  # upper teeth: a band hanging from the top of the opening
            teeth_axes = (axes[0] * TEETH_WIDTH, TEETH_DEPTH * s * teeth)
            self._ellipse(mouth_layer, (cx, top), teeth_axes, self.colors["teeth"])
        if tongue > MIN_VISIBLE:  # tongue tip: rises from the bottom of the opening
            tongue_axes = (axes[0] * TONGUE_WIDTH * tongue, gap * TONGUE_HEIGHT)
            self._ellipse(mouth_layer, (cx, top + gap * (1 - TONGUE_HEIGHT / 2)), tongue_axes, self.colors["tongue"])
        inside = np.zeros(roi.shape[:2], np.uint8)
        self._ellipse(inside, centre, axes, 255)
        alpha = inside.astype(np.float32)[..., None] / 255.0  # teeth and tongue only where the mouth is open
        roi[:] = (mouth_layer * alpha + roi * (1 - alpha)).astype(np.uint8)

    def _drop_jaw(self, image: np.ndarray, shift: float) -> None:
        """Move the skin below the mouth down by `shift` pixels, fading out at the chin's bottom and sides."""
        if shift < MIN_GAP_PIXELS / 2:
            return
        cx, cy = self._at_scale(self.portrait.mouth_center)
        chin = self.portrait.chin_y * self.scale
        half = self.portrait.jaw_half_width * self.scale
        x0, x1 = max(int(cx - half), 0), min(int(cx + half) + 1, image.shape[1])
        y0, y1 = max(int(cy), 0), min(int(chin) + 1, image.shape[0])
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        across = np.sqrt(np.clip(1 - np.abs(xs - cx) / half, 0, 1))
        down = np.clip(JAW_FADE * (chin - ys) / max(chin - cy, 1), 0, 1)
        map_y = ys - shift * across * down
        image[y0:y1, x0:x1] = cv2.remap(image, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _draw_eyelid(self, image: np.ndarray, eye: tuple[float, float], closure: float, color) -> None:
        """Cover the eye from the top down to `closure` of its height, with a dark lash line at the edge."""
        ax, ay = self.portrait.eye_axes[0] * self.scale, self.portrait.eye_axes[1] * self.scale
        roi, (ex, ey) = _region(image, self._at_scale(eye), max(ax, ay) + 2)  # + 2: room for anti-aliasing
        mask = np.zeros(roi.shape[:2], np.uint8)
        self._ellipse(mask, (ex, ey), (ax, ay), 255)
        edge = ey - ay + 2 * ay * closure
        mask[max(int(np.ceil(edge)), 0) :] = 0
        alpha = mask.astype(np.float32)[..., None] / 255.0
        roi[:] = (roi * (1 - alpha) + np.array(color, np.float32) * alpha).astype(np.uint8)
        lash = (_fixed(ex - ax * LASH_WIDTH), _fixed(edge)), (_fixed(ex + ax * LASH_WIDTH), _fixed(edge))
        cv2.line(roi, *lash, LASH_BGR, 1, cv2.LINE_AA, SUBPIXEL_BITS)

    @staticmethod
    def _ellipse(image: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], color) -> None:
        """A filled anti-aliased ellipse at sub-pixel precision."""
        centre_fixed = (_fixed(centre[0]), _fixed(centre[1]))
        axes_fixed = (max(_fixed(axes[0]), 1), max(_fixed(axes[1]), 1))
        cv2.ellipse(image, centre_fixed, axes_fixed, 0, 0, 360, color, cv2.FILLED, cv2.LINE_AA, SUBPIXEL_BITS)

    def _place(self, image: np.ndarray, head: np.ndarray) -> np.ndarray:
        """Rotate/shift/zoom the face by the head motion, put it at the speaker's position, light it."""
        dx, dy, angle, zoom = (float(v) for v in head)
        style = self.style
        face = self._at_scale(self.portrait.face_center)
        matrix = cv2.getRotationMatrix2D(face, angle, 1.0 + zoom)
        matrix[0, 2] += style.center[0] + dx * style.face_size - face[0]
        matrix[1, 2] += style.center[1] + dy * style.face_size - face[1]
        # replicate, not reflect: a mirrored copy of the face at the border would be a second face
        size = (FRAME_SIZE, FRAME_SIZE)
        frame = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.clip(frame * self.light, 0, 255).astype(np.uint8)


def _region(image: np.ndarray, centre: tuple[float, float], half: float) -> tuple[np.ndarray, tuple[float, float]]:
    """A square view of `image` around `centre` (drawing there is cheaper) and the centre in its coordinates."""
    x0, y0 = max(int(centre[0] - half), 0), max(int(centre[1] - half), 0)
    x1, y1 = int(np.ceil(centre[0] + half)) + 1, int(np.ceil(centre[1] + half)) + 1
    return image[y0:y1, x0:x1], (centre[0] - x0, centre[1] - y0)


def _light_field(style: FaceStyle) -> np.ndarray:
    """A linear lighting gradient across the frame from `light_angle`. shape = (FRAME_SIZE, FRAME_SIZE, 1)."""
    ys, xs = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32)
    along = (xs - style.center[0]) * np.cos(style.light_angle) + (ys - style.center[1]) * np.sin(style.light_angle)
    field = style.brightness * (1 + style.light_strength * along / (style.face_size / 2))
    return np.clip(field, *LIGHT_GAIN_LIMITS)[..., None].astype(np.float32)


def render_video(renderer: FaceRenderer, phonemes, n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """All frames of one utterance. shape = (n_frames, FRAME_SIZE, FRAME_SIZE, 3), uint8 BGR."""
    mouths = mouth_track(phonemes, n_frames, fps)
    blinks = blink_track(n_frames, fps, rng)
    heads = head_track(n_frames, fps, rng)
    frames = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for k in range(n_frames):
        frames[k] = renderer.render(mouths[k], float(blinks[k]), heads[k])
    return frames
