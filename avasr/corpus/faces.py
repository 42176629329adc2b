"""The corpus's face identities: one photograph and generated portraits, each a `Portrait` the face renderer animates.

Identity 0 is the frontal photograph of Grace Hopper that matplotlib ships (`face.photo_portrait`). The others are
drawn here from a fixed table (`IDENTITIES`): head shape, skin, hair (colour and style), eyebrows, eye colour,
glasses, beard, clothes, background, and the mouth's own proportions and colour. They are painted with soft,
shaded shapes (eye sockets darker than the cheeks, a lit nose bridge, a shadow under the nose), because the lip
pipeline finds faces with OpenCV's Haar cascade, which looks for exactly those contrasts. Nothing is downloaded:
the photograph is inside the matplotlib wheel and the rest is drawn with OpenCV.

Every portrait is drawn at the photograph's scale (a face box of about 222 pixels), without lips: the renderer
draws the mouth in every frame. The face box is not assumed but found, with the same Haar cascade as the lip
pipeline, on the portrait with a closed mouth drawn in (`measure_face_box`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from avasr.corpus import face
from avasr.corpus.face import Portrait

CANVAS = (600, 512)  # height, width: the photograph's
HEAD_CENTER = (256.0, 250.0)
HAAR_CASCADE = "haarcascade_frontalface_alt2.xml"  # the lip pipeline's (avasr/data/lips.py)
SCLERA_BGR = (165, 172, 180)  # eye whites in shadow: bright whites break the dark band the cascade looks for
NOISE = 3.0  # sensor-like noise, grey levels: flat painted areas look like nothing the cascade was trained on

# Layout inside the head, in units of the head's half-height (y) and half-width (x), from its centre.
EYE_Y, EYE_X = -0.1, 0.42
BROW_Y = -0.3
NOSE_TIP_Y = 0.3
MOUTH_Y = 0.52
HAIRLINE_Y = -0.5


@dataclass(frozen=True)
class FaceIdentity:
    """One generated face. Colours BGR; sizes in canvas pixels."""

    name: str
    skin_bgr: tuple[float, float, float]
    head_axes: tuple[float, float]  # half-width, half-height of the head
    jaw: float  # 0 = an oval chin, 1 = a square jaw
    hair_bgr: tuple[float, float, float]
    hair: str  # "short", "long", "bald", "bun", "curly"
    brow: float  # eyebrow thickness, relative
    iris_bgr: tuple[float, float, float]
    glasses: str  # "none", "round" (square frames' straight edges hide the face from the Haar cascade)
    beard: str  # "none", "full", "moustache", "goatee"
    clothes_bgr: tuple[float, float, float]
    background_bgr: tuple[tuple[float, float, float], tuple[float, float, float]]  # top, bottom
    mouth_width: float  # relative to the photograph's mouth
    lip_thickness: float
    articulation: float  # how far this face opens its mouth (1 = the viseme table)
    lip_bgr: tuple[float, float, float]


PHOTO = "hopper"  # identity 0: the photograph
IDENTITIES: tuple[FaceIdentity, ...] = (
    FaceIdentity("amara", (70, 98, 150), (98, 128), 0.3, (25, 25, 30), "curly", 1.1, (30, 40, 60), "none", "none",
                 (150, 90, 40), ((170, 160, 150), (120, 110, 100)), 1.05, 1.25, 1.1, (80, 80, 150)),
    FaceIdentity("bjorn", (150, 170, 225), (98, 126), 0.8, (90, 160, 200), "short", 1.0, (160, 120, 80), "none",
                 "full", (60, 60, 60), ((200, 180, 140), (150, 120, 90)), 1.0, 0.9, 0.9, (110, 120, 200)),
    FaceIdentity("chen", (120, 160, 215), (96, 126), 0.4, (20, 20, 25), "short", 0.9, (30, 40, 50), "round",
                 "none", (40, 40, 140), ((120, 150, 120), (80, 100, 80)), 0.92, 0.95, 1.0, (100, 110, 205)),
    FaceIdentity("dolores", (100, 135, 190), (94, 124), 0.2, (30, 40, 70), "long", 1.0, (40, 70, 90), "none",
                 "none", (120, 60, 120), ((140, 120, 170), (90, 80, 120)), 1.0, 1.15, 1.05, (90, 80, 185)),
    FaceIdentity("emeka", (68, 92, 140), (100, 128), 0.7, (20, 20, 20), "bald", 1.2, (20, 30, 40), "none",
                 "goatee", (180, 180, 180), ((110, 150, 190), (70, 100, 140)), 1.1, 1.2, 0.85, (70, 70, 120)),
    FaceIdentity("fiona", (160, 180, 235), (92, 124), 0.1, (40, 90, 170), "bun", 0.8, (120, 140, 60), "round",
                 "none", (150, 150, 60), ((190, 190, 200), (140, 140, 150)), 0.95, 1.0, 1.15, (120, 110, 215)),
    FaceIdentity("gustavo", (90, 125, 175), (100, 130), 0.6, (35, 35, 40), "short", 1.3, (30, 50, 70), "none",
                 "moustache", (90, 50, 30), ((150, 200, 210), (100, 140, 150)), 1.08, 0.85, 0.95, (85, 95, 170)),
    FaceIdentity("hana", (130, 165, 220), (90, 122), 0.2, (25, 25, 35), "long", 0.9, (25, 35, 45), "none",
                 "none", (200, 200, 230), ((100, 90, 80), (60, 55, 50)), 0.9, 1.1, 1.2, (110, 100, 210)),
    FaceIdentity("ivan", (140, 160, 210), (96, 124), 0.9, (170, 170, 175), "short", 1.1, (140, 110, 90), "none",
                 "full", (50, 80, 50), ((170, 170, 130), (120, 120, 90)), 1.02, 0.9, 0.8, (100, 105, 180)),
)  # fmt: skip


HELD_OUT = ("fiona", "gustavo", "hana")  # faces never seen in training: the unseen-face and unseen-engine splits


def training_faces() -> tuple[str, ...]:
    return tuple(name for name in identity_names() if name not in HELD_OUT)


def identity_names() -> tuple[str, ...]:
    """Every identity's name: the photograph first, then the generated faces."""
    return (PHOTO, *(i.name for i in IDENTITIES))


@functools.cache
def portrait(name: str) -> Portrait:
    """The portrait of an identity, drawn and measured once per process."""
    if name == PHOTO:
        return face.photo_portrait()
    by_name = {i.name: i for i in IDENTITIES}
    if name not in by_name:
        raise ValueError(f"unknown face identity {name!r} (choose from {', '.join(identity_names())})")
    return draw_portrait(by_name[name])


# --- drawing ------------------------------------------------------------------------------------------------------
def draw_portrait(identity: FaceIdentity) -> Portrait:
    """Paint the identity without lips, then find its face box with the Haar cascade."""
    rng = np.random.default_rng(sum(map(ord, identity.name)))
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    image = _background(identity)
    image = _paint(image, _ellipse_mask((cx, cy + 2.35 * hy), (2.3 * hx, 1.3 * hy), 3), identity.clothes_bgr)
    skin = np.array(identity.skin_bgr, np.float32)
    neck = np.zeros(CANVAS, np.float32)
    cv2.rectangle(neck, (round(cx - 0.55 * hx), round(cy)), (round(cx + 0.55 * hx), round(cy + 1.6 * hy)), 1.0, -1)
    image = _paint(image, _soft(neck, 4), skin * 0.72)
    if identity.hair in ("long", "curly"):
        image = _draw_hair_behind(image, identity, rng)
    image = _draw_head(image, identity)
    image = _draw_eyes(image, identity)
    image = _draw_nose(image, identity)
    if identity.beard != "none":
        image = _draw_beard(image, identity, rng)
    image = _draw_hair_top(image, identity, rng)
    if identity.glasses != "none":
        image = _draw_glasses(image, identity)
    image = image + rng.normal(0, NOISE, image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    mouth = (cx, cy + MOUTH_Y * hy)
    eye_axes = (0.2 * hx, 0.075 * hy)
    partial = Portrait(
        name=identity.name,
        image=image,
        face_center=(cx, cy),
        face_box_size=2 * hx,
        mouth_center=mouth,
        mouth_half_width=0.36 * hx * identity.mouth_width,
        eye_centers=((cx - EYE_X * hx, cy + EYE_Y * hy), (cx + EYE_X * hx, cy + EYE_Y * hy)),
        eye_axes=eye_axes,
        chin_y=cy + 0.97 * hy,
        jaw_half_width=0.62 * hx,
        lip_bgr=identity.lip_bgr,
        lip_thickness=identity.lip_thickness,
        articulation=identity.articulation,
    )
    centre, side = measure_face_box(partial)
    return Portrait(**{**partial.__dict__, "face_center": centre, "face_box_size": side})


def measure_face_box(portrait: Portrait) -> tuple[tuple[float, float], float]:
    """The Haar face box of a portrait with a closed mouth drawn in: (centre, side) in canvas pixels.

    Raises ValueError naming the identity when the cascade finds no face (the lip pipeline would not either).
    """
    frame = face.FaceRenderer(portrait, face.neutral_style(portrait)).draw_static(np.array(face.REST_MOUTH))
    gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
    found = cascade.detectMultiScale(gray, 1.05, 5, minSize=(100, 100))
    if not len(found):
        raise ValueError(f"face identity {portrait.name!r}: the Haar cascade finds no face in its portrait")
    x, y, w, h = max(found, key=lambda box: box[2])
    return (float(x + w / 2), float(y + h / 2)), float(w)


def _background(identity: FaceIdentity) -> np.ndarray:
    top, bottom = (np.array(c, np.float32) for c in identity.background_bgr)
    t = np.linspace(0, 1, CANVAS[0], dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (*CANVAS, 3)).copy()


def _ellipse_mask(centre, axes, blur: float, angle: float = 0.0, start: float = 0, end: float = 360) -> np.ndarray:
    mask = np.zeros(CANVAS, np.float32)
    cv2.ellipse(mask, _fixed(centre), _fixed(axes), angle, start, end, 1.0, -1, cv2.LINE_AA, face.SUBPIXEL_BITS)
    return _soft(mask, blur)


def _fixed(point) -> tuple[int, int]:
    return round(point[0] * face.SUBPIXEL), round(point[1] * face.SUBPIXEL)


def _soft(mask: np.ndarray, blur: float) -> np.ndarray:
    return cv2.GaussianBlur(mask, (0, 0), blur) if blur > 0 else mask


def _paint(image: np.ndarray, mask: np.ndarray, color, alpha: float = 1.0) -> np.ndarray:
    """Blend `color` (BGR, or an image) into `image` where `mask` (0..1) says, at most `alpha`; in place.

    Only the mask's bounding box is touched: most strokes cover a small part of the canvas.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return image
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    weight = (mask[box] * alpha)[..., None]
    color = np.asarray(color, np.float32)
    image[box] = image[box] * (1 - weight) + (color[box] if color.ndim == 3 else color) * weight
    return image


def _head_mask(identity: FaceIdentity, blur: float = 2.0) -> np.ndarray:
    """An oval head whose lower half widens towards a square jaw by `jaw`."""
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    mask = _ellipse_mask((cx, cy), (hx, hy), 0)
    jaw = np.zeros(CANVAS, np.float32)
    corner = 0.35 * hx
    x0, x1 = round(cx - hx * 0.93), round(cx + hx * 0.93)
    y0, y1 = round(cy), round(cy + hy * 0.92)
    cv2.rectangle(jaw, (x0, y0), (x1, y1 - round(corner)), 1.0, -1)
    cv2.ellipse(jaw, (round(cx), y1 - round(corner)), (round(hx * 0.93 - corner), round(corner)), 0, 0, 180, 1.0, -1)
    cv2.rectangle(jaw, (x0 + round(corner), y1 - round(corner)), (x1 - round(corner), y1), 1.0, -1)
    for x in (x0 + corner, x1 - corner):
        cv2.circle(jaw, (round(x), y1 - round(corner)), round(corner), 1.0, -1)
    return _soft(np.maximum(mask, identity.jaw * jaw), blur)


def _draw_head(image: np.ndarray, identity: FaceIdentity) -> np.ndarray:
    """Skin shaded like a lit sphere (darker towards the edges), ears, a soft shadow under the chin."""
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    skin = np.array(identity.skin_bgr, np.float32)
    for side in (-1, 1):
        image = _paint(
            image, _ellipse_mask((cx + side * 0.97 * hx, cy + 0.02 * hy), (0.14 * hx, 0.2 * hy), 2), skin * 0.82
        )
    ys, xs = np.mgrid[0 : CANVAS[0], 0 : CANVAS[1]].astype(np.float32)
    radius2 = ((xs - cx) / hx) ** 2 + ((ys - cy) / hy) ** 2
    shading = np.clip(1.1 - 0.32 * radius2, 0.55, 1.1)[..., None]
    return _paint(image, _head_mask(identity), np.clip(skin * shading, 0, 255))


def _draw_eyes(image: np.ndarray, identity: FaceIdentity) -> np.ndarray:
    """Shadowed sockets, eyebrows, whites, irises, pupils and a dark upper lid line."""
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    skin = np.array(identity.skin_bgr, np.float32)
    for side in (-1, 1):
        ex, ey = cx + side * EYE_X * hx, cy + EYE_Y * hy
        cheek = _ellipse_mask((ex, cy + 0.2 * hy), (0.3 * hx, 0.14 * hy), 10)
        image = _paint(image, cheek, np.minimum(skin * 1.12, 255), 0.6)
        image = _paint(image, _ellipse_mask((ex, ey - 0.02 * hy), (0.33 * hx, 0.15 * hy), 9), skin * 0.55, 0.8)
        brow = _ellipse_mask((ex, cy + BROW_Y * hy), (0.27 * hx, 0.035 * hy * identity.brow), 1.5, angle=-side * 7)
        image = _paint(image, brow, np.array(identity.hair_bgr, np.float32) * 0.8 + 10, 0.9)
        image = _paint(image, _ellipse_mask((ex, ey), (0.18 * hx, 0.065 * hy), 1), SCLERA_BGR)
        image = _paint(image, _ellipse_mask((ex, ey), (0.09 * hx, 0.07 * hy), 0.8), identity.iris_bgr)
        image = _paint(image, _ellipse_mask((ex, ey), (0.038 * hx, 0.038 * hy), 0.5), (12, 12, 12))
        image = _paint(
            image, _ellipse_mask((ex + 0.02 * hx, ey - 0.025 * hy), (0.012 * hx, 0.012 * hy), 0.3), (250, 250, 250), 0.8
        )
        lid = np.zeros(CANVAS, np.float32)
        cv2.ellipse(
            lid, _fixed((ex, ey)), _fixed((0.19 * hx, 0.075 * hy)), 0, 180, 360, 1.0, 8, cv2.LINE_AA, face.SUBPIXEL_BITS
        )
        image = _paint(image, _soft(lid, 1.0), (30, 30, 40), 0.95)
    return image


def _draw_nose(image: np.ndarray, identity: FaceIdentity) -> np.ndarray:
    """A lit bridge, a shadow down one side, nostrils and the shadow under the nose."""
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    skin = np.array(identity.skin_bgr, np.float32)
    image = _paint(
        image, _ellipse_mask((cx, cy + 0.1 * hy), (0.09 * hx, 0.25 * hy), 6), np.minimum(skin * 1.15, 255), 0.6
    )
    side = np.zeros(CANVAS, np.float32)
    cv2.line(
        side, (round(cx + 0.12 * hx), round(cy + EYE_Y * hy)), (round(cx + 0.16 * hx), round(cy + 0.26 * hy)), 1.0, 6
    )
    image = _paint(image, _soft(side, 5), skin * 0.7, 0.6)
    for s in (-1, 1):
        image = _paint(
            image, _ellipse_mask((cx + s * 0.09 * hx, cy + NOSE_TIP_Y * hy), (0.05 * hx, 0.025 * hy), 1.5), skin * 0.4
        )
    return _paint(image, _ellipse_mask((cx, cy + 0.37 * hy), (0.2 * hx, 0.05 * hy), 5), skin * 0.75, 0.5)


def _texture(rng: np.random.Generator, blur: float, contrast: float) -> np.ndarray:
    """Hair-like texture: smoothed noise around 1. shape = CANVAS."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, CANVAS).astype(np.float32), (0, 0), blur)
    return 1 + contrast * noise / (noise.std() + 1e-6)


def _hair_color(identity: FaceIdentity, rng: np.random.Generator, blur: float = 1.5) -> np.ndarray:
    return np.clip(np.array(identity.hair_bgr, np.float32) * _texture(rng, blur, 0.1)[..., None], 0, 255)


def _draw_hair_behind(image: np.ndarray, identity: FaceIdentity, rng: np.random.Generator) -> np.ndarray:
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    if identity.hair == "long":
        mask = _ellipse_mask((cx, cy + 0.35 * hy), (1.28 * hx, 1.3 * hy), 3)
    else:  # curly: a round volume around the head
        mask = _ellipse_mask((cx, cy - 0.2 * hy), (1.3 * hx, 1.0 * hy), 4)
    return _paint(image, mask, _hair_color(identity, rng, 4.0 if identity.hair == "curly" else 2.5))


def _draw_hair_top(image: np.ndarray, identity: FaceIdentity, rng: np.random.Generator) -> np.ndarray:
    """Hair over the top of the head down to the hairline (or a bald crown's highlight)."""
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    if identity.hair == "bald":
        return _paint(
            image, _ellipse_mask((cx - 0.2 * hx, cy - 0.7 * hy), (0.35 * hx, 0.18 * hy), 12), (240, 240, 245), 0.25
        )
    ys, xs = np.mgrid[0 : CANVAS[0], 0 : CANVAS[1]].astype(np.float32)
    hairline = cy + HAIRLINE_Y * hy + 0.12 * hy * np.cos((xs - cx) / hx * 2.2)  # lower at the temples
    cap = _ellipse_mask((cx, cy - 0.12 * hy), (1.06 * hx, 0.98 * hy), 0) * (ys < hairline)
    if identity.hair == "bun":
        cap = np.maximum(cap, _ellipse_mask((cx, cy - 1.05 * hy), (0.38 * hx, 0.26 * hy), 0))
    if identity.hair in ("long", "curly"):  # falls down beside the face
        for side in (-1, 1):
            strand = _ellipse_mask((cx + side * 1.0 * hx, cy + 0.05 * hy), (0.17 * hx, 0.75 * hy), 0)
            cap = np.maximum(cap, strand)
    return _paint(image, _soft(cap.astype(np.float32), 2), _hair_color(identity, rng, 2.5))


def _draw_beard(image: np.ndarray, identity: FaceIdentity, rng: np.random.Generator) -> np.ndarray:
    """Beard or moustache around a mouth-shaped gap: the renderer's lips stay on skin."""
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    mouth_y = cy + MOUTH_Y * hy
    ys = np.mgrid[0 : CANVAS[0], 0 : CANVAS[1]][0].astype(np.float32)
    mask = np.zeros(CANVAS, np.float32)
    if identity.beard == "full":
        mask = _head_mask(identity, 0) * (ys > cy + 0.36 * hy)
    elif identity.beard == "goatee":
        mask = _ellipse_mask((cx, mouth_y + 0.2 * hy), (0.3 * hx, 0.3 * hy), 0)
    moustache = _ellipse_mask((cx, mouth_y - 0.12 * hy), (0.42 * hx, 0.075 * hy), 0)
    mask = np.maximum(mask, moustache)
    gap = _ellipse_mask((cx, mouth_y + 0.02 * hy), (0.43 * hx * identity.mouth_width, 0.085 * hy), 0)
    mask = np.clip(mask - gap, 0, 1)
    return _paint(image, _soft(mask, 2.0), _hair_color(identity, rng, 1.5), 0.9)


def _draw_glasses(image: np.ndarray, identity: FaceIdentity) -> np.ndarray:
    """Dark frames around the eyes and a bridge: outside the eyelids, so blinks still show."""
    hx, hy = identity.head_axes
    cx, cy = HEAD_CENTER
    frame = np.zeros(CANVAS, np.float32)
    lens = (0.3 * hx, 0.17 * hy)
    for side in (-1, 1):
        ex, ey = cx + side * EYE_X * hx, cy + EYE_Y * hy
        cv2.ellipse(frame, _fixed((ex, ey)), _fixed(lens), 0, 0, 360, 1.0, 4, cv2.LINE_AA, face.SUBPIXEL_BITS)
        temple_x = ex + side * lens[0]
        cv2.line(
            frame,
            (round(temple_x), round(ey - 0.05 * hy)),
            (round(ex + side * 0.95 * hx), round(ey - 0.08 * hy)),
            1.0,
            4,
        )
    inner = EYE_X * hx - lens[0]
    bridge_y = round(cy + EYE_Y * hy - 0.09 * hy)
    cv2.line(frame, (round(cx - inner), bridge_y), (round(cx + inner), bridge_y), 1.0, 3)
    return _paint(image, _soft(frame, 0.7), (25, 25, 30))


@functools.lru_cache(maxsize=64)
def renderer_for(style: face.FaceStyle) -> face.FaceRenderer:
    """One renderer per speaker and process: building one rescales the whole portrait."""
    return face.FaceRenderer(portrait(style.identity), style)


def contact_sheet(size: int = 128) -> np.ndarray:
    """Every identity, mouth closed above mouth open, named; held-out faces marked with *.

    shape = (2 * size + 20, n_identities * size, 3), uint8 BGR.
    """
    label_height = 20
    columns = []
    for name in identity_names():
        style = face.FaceStyle(name, 0.62 * size, (size / 2, size / 2 + 0.04 * size), 1.5 * np.pi, 0.0, 1.0)
        renderer = face.FaceRenderer(portrait(name), style)
        rows = [
            renderer.render(np.array(face.VISEMES[v].shape, np.float32), 0.0, np.zeros(4)) for v in ("rest", "open")
        ]
        frames = np.vstack([cv2.resize(r, (size, size), interpolation=cv2.INTER_AREA) for r in rows])
        label = np.full((label_height, size, 3), 255, np.uint8)
        text = f"{name}*" if name in HELD_OUT else name
        cv2.putText(label, text, (4, label_height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        columns.append(np.vstack([label, frames]))
    return np.hstack(columns)
