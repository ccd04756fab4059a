"""Learned detection AutoAugment (Zoph et al. 2019, "Learning Data Augmentation Strategies for Object Detection").

A re-implementation of tensorflow/tpu ``models/official/detection/utils/autoaugment_utils.py`` (policies v0..v3) as an
od2 transform (see ``od2.data.transforms`` for the protocol). Per image one sub-policy is chosen uniformly; each of its
``(op, prob, level)`` entries fires with probability ``prob`` and maps ``level`` in 0..10 to a magnitude:

- translate: level/10 * 250 px (whole image, ``*_BBox``) or level/10 * 120 px (``*_Only_BBoxes``), random sign;
- shear: level/10 * 0.3, random sign; rotate: level/10 * 30 degrees, random sign;
- Color / Contrast / Brightness / Sharpness factor: level/10 * 1.8 + 0.1;
- Cutout pad: int(level/10 * 100) (a square of side 2*pad); Cutout_Only_BBoxes pad: int(level/10 * 50);
  BBox_Cutout pad fraction: level/10 * 0.75 of the chosen box's half sides;
- Solarize threshold int(level/10 * 256); SolarizeAdd addition int(level/10 * 110); Posterize bits int(level/10 * 4).

Geometric ops and the cutouts fill with 128. Whole-image geometric ops keep the image size, sample with NEAREST, and map
each box to the axis-aligned box of its 4 transformed corners. ``*_Only_BBoxes`` ops apply their op to the pixels inside
each box independently with probability prob/3 (the reference's ``_scale_bbox_only_op_probability``; the op itself then
always "fires", the probability lives per box), in a random box order; boxes are unchanged.

Deliberate deviations from the TF reference:

- Coordinates are od2's pixel-edge XYXY floats; boxes are transformed exactly (no int32 truncation of corners) and left
  partly or wholly outside the image, to be clipped and dropped by ``clip_and_filter`` (run between the ops of a
  sub-policy and by ``Compose``). TF clipped them to the image and widened degenerate boxes to 5 % of the image
  (``_check_bbox_area``), so a box translated out of the image survived as a sliver at the border.
- Warps use pixel-edge coordinates: shear is about the image's top-left corner rather than the top-left pixel centre
  (at most 0.15 px apart), and the region of a box is the pixels it covers (TF also took one row and column past the
  far edge).
- Contrast blends with the mean grey level, as PIL's ``ImageEnhance.Contrast`` does. TF took ``sum(histogram) / 256``,
  i.e. the pixel count / 256, which is a bug.
- Translations are whole pixels (all policy levels give integers), the same for image and boxes. A positive shift
  moves content right/down and a positive angle rotates counter-clockwise (TF's translate moved content left/up for a
  positive argument); with the random sign this changes nothing.

Kept as in TF: Posterize with 0 bits (v3's level 2) keeps the top bit, as TF's clamped shift does (PIL would give a
black image); Color/Contrast use TF's grey weights and Sharpness truncates, so they differ from PIL by at most 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from od2.data.transforms import Sample, check_probability, clip_and_filter

__all__ = [
    "AUTOAUGMENT_POLICIES",
    "AutoAugment",
    "BBOX_ONLY_OPS",
    "FILL",
    "OPS",
    "affine_warp",
    "apply_op",
    "autocontrast",
    "blend",
    "bbox_cutout",
    "brightness",
    "color",
    "contrast",
    "cutout",
    "equalize",
    "grayscale",
    "posterize",
    "rotate",
    "rotation_matrix",
    "sharpness",
    "shear_matrix",
    "shear_x",
    "shear_y",
    "solarize",
    "solarize_add",
    "transform_boxes",
    "translate",
]

MAX_LEVEL = 10.0
# Fill value ("replace") of geometric ops and cutouts.
FILL = 128
# Reference hparams of distort_image_with_autoaugment.
CUTOUT_CONST = 100
TRANSLATE_CONST = 250
TRANSLATE_BBOX_CONST = 120
CUTOUT_BBOX_CONST = 50
CUTOUT_MAX_PAD_FRACTION = 0.75
# Probability scale of *_Only_BBoxes ops (_scale_bbox_only_op_probability).
BBOX_ONLY_PROB_SCALE = 1.0 / 3.0

Policy = list[list[tuple[str, float, int]]]

AUTOAUGMENT_POLICIES: dict[str, Policy] = {
    # The policy of the paper (all its results).
    "v0": [
        [("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)],
        [("TranslateY_Only_BBoxes", 0.2, 2), ("Cutout", 0.8, 8)],
        [("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)],
        [("ShearY_BBox", 1.0, 2), ("TranslateY_Only_BBoxes", 0.6, 6)],
        [("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)],
    ],
    "v1": [
        [("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)],
        [("TranslateY_Only_BBoxes", 0.2, 2), ("Cutout", 0.8, 8)],
        [("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)],
        [("ShearY_BBox", 1.0, 2), ("TranslateY_Only_BBoxes", 0.6, 6)],
        [("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)],
        [("Color", 0.0, 0), ("ShearX_Only_BBoxes", 0.8, 4)],
        [("ShearY_Only_BBoxes", 0.8, 2), ("Flip_Only_BBoxes", 0.0, 10)],
        [("Equalize", 0.6, 10), ("TranslateX_BBox", 0.2, 2)],
        [("Color", 1.0, 10), ("TranslateY_Only_BBoxes", 0.4, 6)],
        [("Rotate_BBox", 0.8, 10), ("Contrast", 0.0, 10)],
        [("Cutout", 0.2, 2), ("Brightness", 0.8, 10)],
        [("Color", 1.0, 6), ("Equalize", 1.0, 2)],
        [("Cutout_Only_BBoxes", 0.4, 6), ("TranslateY_Only_BBoxes", 0.8, 2)],
        [("Color", 0.2, 8), ("Rotate_BBox", 0.8, 10)],
        [("Sharpness", 0.4, 4), ("TranslateY_Only_BBoxes", 0.0, 4)],
        [("Sharpness", 1.0, 4), ("SolarizeAdd", 0.4, 4)],
        [("Rotate_BBox", 1.0, 8), ("Sharpness", 0.2, 8)],
        [("ShearY_BBox", 0.6, 10), ("Equalize_Only_BBoxes", 0.6, 8)],
        [("ShearX_BBox", 0.2, 6), ("TranslateY_Only_BBoxes", 0.2, 10)],
        [("SolarizeAdd", 0.6, 8), ("Brightness", 0.8, 10)],
    ],
    "v2": [
        [("Color", 0.0, 6), ("Cutout", 0.6, 8), ("Sharpness", 0.4, 8)],
        [("Rotate_BBox", 0.4, 8), ("Sharpness", 0.4, 2), ("Rotate_BBox", 0.8, 10)],
        [("TranslateY_BBox", 1.0, 8), ("AutoContrast", 0.8, 2)],
        [("AutoContrast", 0.4, 6), ("ShearX_BBox", 0.8, 8), ("Brightness", 0.0, 10)],
        [("SolarizeAdd", 0.2, 6), ("Contrast", 0.0, 10), ("AutoContrast", 0.6, 0)],
        [("Cutout", 0.2, 0), ("Solarize", 0.8, 8), ("Color", 1.0, 4)],
        [("TranslateY_BBox", 0.0, 4), ("Equalize", 0.6, 8), ("Solarize", 0.0, 10)],
        [("TranslateY_BBox", 0.2, 2), ("ShearY_BBox", 0.8, 8), ("Rotate_BBox", 0.8, 8)],
        [("Cutout", 0.8, 8), ("Brightness", 0.8, 8), ("Cutout", 0.2, 2)],
        [("Color", 0.8, 4), ("TranslateY_BBox", 1.0, 6), ("Rotate_BBox", 0.6, 6)],
        [("Rotate_BBox", 0.6, 10), ("BBox_Cutout", 1.0, 4), ("Cutout", 0.2, 8)],
        [("Rotate_BBox", 0.0, 0), ("Equalize", 0.6, 6), ("ShearY_BBox", 0.6, 8)],
        [("Brightness", 0.8, 8), ("AutoContrast", 0.4, 2), ("Brightness", 0.2, 2)],
        [("TranslateY_BBox", 0.4, 8), ("Solarize", 0.4, 6), ("SolarizeAdd", 0.2, 10)],
        [("Contrast", 1.0, 10), ("SolarizeAdd", 0.2, 8), ("Equalize", 0.2, 4)],
    ],
    "v3": [
        [("Posterize", 0.8, 2), ("TranslateX_BBox", 1.0, 8)],
        [("BBox_Cutout", 0.2, 10), ("Sharpness", 1.0, 8)],
        [("Rotate_BBox", 0.6, 8), ("Rotate_BBox", 0.8, 10)],
        [("Equalize", 0.8, 10), ("AutoContrast", 0.2, 10)],
        [("SolarizeAdd", 0.2, 2), ("TranslateY_BBox", 0.2, 8)],
        [("Sharpness", 0.0, 2), ("Color", 0.4, 8)],
        [("Equalize", 1.0, 8), ("TranslateY_BBox", 1.0, 8)],
        [("Posterize", 0.6, 2), ("Rotate_BBox", 0.0, 10)],
        [("AutoContrast", 0.6, 0), ("Rotate_BBox", 1.0, 6)],
        [("Equalize", 0.0, 4), ("Cutout", 0.8, 10)],
        [("Brightness", 1.0, 2), ("TranslateY_BBox", 1.0, 6)],
        [("Contrast", 0.0, 2), ("ShearY_BBox", 0.8, 0)],
        [("AutoContrast", 0.8, 10), ("Contrast", 0.2, 10)],
        [("Rotate_BBox", 1.0, 10), ("Cutout", 1.0, 10)],
        [("SolarizeAdd", 0.8, 6), ("Equalize", 0.8, 8)],
    ],
}

# TF rgb_to_grayscale weights.
_GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Pure pixel functions. All take uint8 [H, W, 3] (any strides), return a new uint8 [H, W, 3] and never write the input.
# ---------------------------------------------------------------------------------------------------------------------


def blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    """image1 + factor * (image2 - image1) of two uint8 [H, W, 3] (or [H, W]) arrays, truncated to uint8.

    factor 0 gives image1, 1 gives image2; factors outside [0, 1] extrapolate and are clipped to [0, 255] (PIL's
    ``Image.blend`` and TF's ``blend`` agree on this truncation).
    """
    if factor == 0.0:
        return np.array(image1, dtype=np.uint8)
    if factor == 1.0:
        return np.array(image2, dtype=np.uint8)
    a = image1.astype(np.float32)
    out = a + np.float32(factor) * (image2.astype(np.float32) - a)
    if not 0.0 < factor < 1.0:
        np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def grayscale(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W] grey level of uint8 [H, W, 3] RGB as TF computes it.

    trunc((0.2989 R + 0.587 G + 0.114 B) / 255 * 255.5); PIL's ``convert("L")`` rounds (R*299 + G*587 + B*114) / 1000
    instead, so the two differ by at most one grey level.
    """
    grey = (image.astype(np.float32) / np.float32(255.0)) @ _GRAY_WEIGHTS
    return (grey * np.float32(255.5)).astype(np.uint8)


def color(image: np.ndarray, factor: float) -> np.ndarray:
    """Saturation (PIL ``ImageEnhance.Color``): blend the grey image (3 equal channels) towards uint8 [H, W, 3]."""
    return blend(np.repeat(grayscale(image)[..., None], 3, axis=2), image, factor)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Contrast``: blend a constant image of the rounded mean grey level towards uint8 [H, W, 3]."""
    mean = int(grayscale(image).mean(dtype=np.float64) + 0.5)
    return blend(np.full(image.shape, mean, dtype=np.uint8), image, factor)


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Brightness``: blend black towards uint8 [H, W, 3]."""
    return blend(np.zeros(image.shape, dtype=np.uint8), image, factor)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Sharpness`` of uint8 [H, W, 3].

    The degenerate image is the 3x3 SMOOTH filter [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 on interior pixels (truncated,
    as TF casts), the one-pixel border kept; the result blends it towards the image.
    """
    height, width = image.shape[:2]
    degenerate = np.array(image, dtype=np.uint8)
    if height > 2 and width > 2:
        src = image.astype(np.int16)  # 13 * 255 fits
        rows = src[:-2] + src[1:-1] + src[2:]
        total = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:] + 4 * src[1:-1, 1:-1]
        degenerate[1:-1, 1:-1] = (total // 13).astype(np.uint8)
    return blend(degenerate, image, factor)


def _apply_luts(image: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Map channel c of uint8 [H, W, C] through luts[c] (uint8 [C, 256]), or all through one uint8 [256] table."""
    if luts.ndim == 1:
        return np.take(luts, image)
    return np.stack([np.take(luts[c], image[..., c]) for c in range(image.shape[2])], axis=2)


def _histograms(image: np.ndarray) -> np.ndarray:
    """int64 [C, 256] per-channel value counts of uint8 [H, W, C]."""
    return np.stack([np.bincount(image[..., c].ravel(), minlength=256) for c in range(image.shape[2])])


def equalize(image: np.ndarray) -> np.ndarray:
    """Per-channel histogram equalisation of uint8 [H, W, 3], PIL ``ImageOps.equalize``'s algorithm.

    Per channel: step = (count of all pixels - count of the last non-empty bin) // 255; if step is 0 the channel is
    unchanged, else value v maps to (cumulative count below v + step // 2) // step, clipped to 255.
    """
    hist = _histograms(image)
    luts = np.empty(hist.shape, dtype=np.uint8)
    for c, h in enumerate(hist):  # 3 tiny 256-entry tables
        nonzero = np.flatnonzero(h)
        step = (int(h.sum()) - int(h[nonzero[-1]])) // 255 if len(nonzero) else 0
        if step == 0:
            luts[c] = np.arange(256)
        else:
            below = np.concatenate([[0], np.cumsum(h)[:-1]])
            luts[c] = np.clip((below + step // 2) // step, 0, 255)
    return _apply_luts(image, luts)


def autocontrast(image: np.ndarray) -> np.ndarray:
    """PIL ``ImageOps.autocontrast`` (cutoff 0) per channel of uint8 [H, W, 3]: map [min, max] to [0, 255], truncating.

    A constant channel is left unchanged.
    """
    channels = image.shape[2]
    lo = np.array([image[..., c].min() for c in range(channels)], dtype=np.float64)
    hi = np.array([image[..., c].max() for c in range(channels)], dtype=np.float64)
    values = np.arange(256, dtype=np.float64)[None, :]
    scale = (255.0 / np.where(hi > lo, hi - lo, 1.0))[:, None]
    luts = np.clip(np.trunc(values * scale - lo[:, None] * scale), 0, 255).astype(np.uint8)
    luts[hi <= lo] = np.arange(256)
    return _apply_luts(image, luts)


_VALUES = np.arange(256)


def solarize(image: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Invert (255 - v) the values of uint8 [H, W, 3] that are >= threshold (PIL ``ImageOps.solarize``)."""
    return _apply_luts(image, np.where(_VALUES < threshold, _VALUES, 255 - _VALUES).astype(np.uint8))


def solarize_add(image: np.ndarray, addition: int = 0, threshold: int = 128) -> np.ndarray:
    """Add ``addition`` (clipped to [0, 255]) to the values of uint8 [H, W, 3] below threshold."""
    lut = np.where(_VALUES < threshold, np.clip(_VALUES + int(addition), 0, 255), _VALUES).astype(np.uint8)
    return _apply_luts(image, lut)


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    """Keep the top ``bits`` bits of each value of uint8 [H, W, 3]; 0 bits keeps 1 (TF's shift is clamped to 7)."""
    shift = min(max(8 - int(bits), 0), 7)
    return _apply_luts(image, ((_VALUES >> shift) << shift).astype(np.uint8))


def cutout(image: np.ndarray, center_y: int, center_x: int, pad_y: int, pad_x: int, fill: int = FILL) -> np.ndarray:
    """Fill rows [cy - pad_y, cy + pad_y) x cols [cx - pad_x, cx + pad_x) of uint8 [H, W, 3], clipped to the image."""
    out = np.array(image, dtype=np.uint8)
    y0, y1 = max(0, center_y - pad_y), max(0, center_y + pad_y)
    x0, x1 = max(0, center_x - pad_x), max(0, center_x + pad_x)
    out[y0:y1, x0:x1] = fill
    return out


def translate(image: np.ndarray, dx: int, dy: int, fill: int = FILL) -> np.ndarray:
    """Move the content of uint8 [H, W, 3] by whole pixels (dx right, dy down) on the same canvas, filling with fill."""
    height, width = image.shape[:2]
    dx, dy = int(dx), int(dy)
    out = np.full(image.shape, fill, dtype=np.uint8)
    if abs(dx) < width and abs(dy) < height:
        out[max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)] = image[
            max(0, -dy) : height + min(0, -dy), max(0, -dx) : width + min(0, -dx)
        ]
    return out


def shear_matrix(level: float, horizontal: bool) -> np.ndarray:
    """float64 [2, 3] forward map of TF's shear_x (x' = x - level * y) or shear_y (y' = y - level * x).

    The image op samples out(x, y) = in(x + level * y, y) (resp. in(x, y + level * x)).
    """
    if horizontal:
        return np.array([[1.0, -level, 0.0], [0.0, 1.0, 0.0]])
    return np.array([[1.0, 0.0, 0.0], [-level, 1.0, 0.0]])


def rotation_matrix(degrees: float, height: int, width: int) -> np.ndarray:
    """float64 [2, 3] forward map rotating by ``degrees`` counter-clockwise (as displayed) about the image centre."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    cx, cy = width / 2.0, height / 2.0
    # y points down, so a displayed counter-clockwise rotation is x' = c dx + s dy, y' = -s dx + c dy.
    return np.array([[cos, sin, cx - cos * cx - sin * cy], [-sin, cos, cy + sin * cx - cos * cy]])


def affine_warp(image: np.ndarray, matrix: np.ndarray, fill: int = FILL) -> np.ndarray:
    """Warp uint8 [H, W, 3] by the forward affine ``matrix`` (float [2, 3], pixel-edge coordinates), same canvas.

    Each output pixel takes the input pixel containing the inverse image of its centre (NEAREST); pixels whose source
    falls outside the image get ``fill``.
    """
    height, width = image.shape[:2]
    forward = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(forward)
    xs = np.arange(width, dtype=np.float64) + 0.5
    ys = np.arange(height, dtype=np.float64) + 0.5
    src_x = np.floor(np.add.outer(inv[0, 1] * ys + inv[0, 2], inv[0, 0] * xs))
    src_y = np.floor(np.add.outer(inv[1, 1] * ys + inv[1, 2], inv[1, 0] * xs))
    valid = (src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height)
    index = (src_y * width + src_x).astype(np.int64)
    index[~valid] = 0
    flat = np.ascontiguousarray(image).reshape(-1, image.shape[2])
    out = np.take(flat, index, axis=0)
    out[~valid] = fill
    return out


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """float32 [N, 4] XYXY: the axis-aligned boxes of the 4 corners of each box mapped by ``matrix`` (float [2, 3])."""
    if len(boxes) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    b = boxes.astype(np.float64)
    xs = b[:, [0, 2, 0, 2]]
    ys = b[:, [1, 1, 3, 3]]
    m = np.asarray(matrix, dtype=np.float64)
    new_x = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    new_y = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return np.stack([new_x.min(1), new_y.min(1), new_x.max(1), new_y.max(1)], axis=1).astype(np.float32)


def shear_x(image: np.ndarray, level: float, fill: int = FILL) -> np.ndarray:
    """TF ``shear_x`` of uint8 [H, W, 3]: out(x, y) = in(x + level * y, y), NEAREST, fill outside."""
    return affine_warp(image, shear_matrix(level, horizontal=True), fill)


def shear_y(image: np.ndarray, level: float, fill: int = FILL) -> np.ndarray:
    """TF ``shear_y`` of uint8 [H, W, 3]: out(x, y) = in(x, y + level * x), NEAREST, fill outside."""
    return affine_warp(image, shear_matrix(level, horizontal=False), fill)


def rotate(image: np.ndarray, degrees: float, fill: int = FILL) -> np.ndarray:
    """Rotate uint8 [H, W, 3] counter-clockwise (as displayed) about its centre, same canvas, NEAREST, fill outside."""
    return affine_warp(image, rotation_matrix(degrees, image.shape[0], image.shape[1]), fill)


def bbox_cutout(image: np.ndarray, box: np.ndarray, pad_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """TF ``bbox_cutout`` (fill 128) of uint8 [H, W, 3] around one float XYXY ``box``.

    The square's half sides are int(pad_fraction * box side / 2) (in covered pixels), its centre a uniform pixel of the
    box; it is clipped to the image.
    """
    y0, y1, x0, x1 = _box_pixels(box, image.shape[0], image.shape[1])
    if y1 <= y0 or x1 <= x0:
        return image
    pad_y = int(pad_fraction * ((y1 - y0) / 2))
    pad_x = int(pad_fraction * ((x1 - x0) / 2))
    center_y = int(rng.integers(y0, y1))
    center_x = int(rng.integers(x0, x1))
    return cutout(image, center_y, center_x, pad_y, pad_x, FILL)


def _box_pixels(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Rows [y0, y1) and columns [x0, x1) of the pixels a float XYXY box covers, clipped to the image."""
    x0 = min(max(int(math.floor(box[0])), 0), width)
    y0 = min(max(int(math.floor(box[1])), 0), height)
    x1 = min(max(int(math.ceil(box[2])), 0), width)
    y1 = min(max(int(math.ceil(box[3])), 0), height)
    return y0, y1, x0, x1


# ---------------------------------------------------------------------------------------------------------------------
# Ops: (sample, rng, level, prob) -> Sample. ``apply_op`` draws the gate of whole-image ops; *_Only_BBoxes ops use prob
# per box.
# ---------------------------------------------------------------------------------------------------------------------

OpFn = Callable[[Sample, np.random.Generator, int, float], Sample]


def _random_sign(rng: np.random.Generator) -> float:
    return -1.0 if rng.random() < 0.5 else 1.0


def _enhance_factor(level: int) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1


def _with_image(sample: Sample, image: np.ndarray) -> Sample:
    return dataclasses.replace(sample, image=image)


def _pixel_op(func: Callable[[np.ndarray, int], np.ndarray]) -> OpFn:
    def op(sample: Sample, rng: np.random.Generator, level: int, prob: float) -> Sample:
        return _with_image(sample, func(sample.image, level))

    return op


def _geometric_op(matrix_fn: Callable[[Sample, float], np.ndarray], magnitude: Callable[[int], float]) -> OpFn:
    def op(sample: Sample, rng: np.random.Generator, level: int, prob: float) -> Sample:
        matrix = matrix_fn(sample, _random_sign(rng) * magnitude(level))
        return dataclasses.replace(
            sample, image=affine_warp(sample.image, matrix), boxes=transform_boxes(sample.boxes, matrix)
        )

    return op


def _translate_op(horizontal: bool) -> OpFn:
    def op(sample: Sample, rng: np.random.Generator, level: int, prob: float) -> Sample:
        pixels = int(round(_random_sign(rng) * level / MAX_LEVEL * TRANSLATE_CONST))
        dx, dy = (pixels, 0) if horizontal else (0, pixels)
        offset = np.array([dx, dy, dx, dy], dtype=np.float32)
        return dataclasses.replace(sample, image=translate(sample.image, dx, dy), boxes=sample.boxes + offset)

    return op


def _cutout_op(sample: Sample, rng: np.random.Generator, level: int, prob: float) -> Sample:
    pad = int(level / MAX_LEVEL * CUTOUT_CONST)
    center_y = int(rng.integers(sample.height))
    center_x = int(rng.integers(sample.width))
    return _with_image(sample, cutout(sample.image, center_y, center_x, pad, pad, FILL))


def _bbox_cutout_op(sample: Sample, rng: np.random.Generator, level: int, prob: float) -> Sample:
    if len(sample.boxes) == 0:
        return sample
    box = sample.boxes[int(rng.integers(len(sample.boxes)))]
    return _with_image(sample, bbox_cutout(sample.image, box, level / MAX_LEVEL * CUTOUT_MAX_PAD_FRACTION, rng))


CropFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _bbox_only_op(make_crop_fn: Callable[[int, np.random.Generator], CropFn]) -> OpFn:
    """An op applying a crop function to each box's pixels independently with probability prob * 1/3.

    ``make_crop_fn(level, rng)`` draws the op's per-image arguments (e.g. the sign, shared by all boxes as in TF) and
    returns ``crop_fn(crop, rng) -> new crop`` of the same shape.
    """

    def op(sample: Sample, rng: np.random.Generator, level: int, prob: float) -> Sample:
        num = len(sample.boxes)
        if num == 0:
            return sample
        crop_fn = make_crop_fn(level, rng)
        order = rng.permutation(num)
        fired = rng.random(num) < prob * BBOX_ONLY_PROB_SCALE
        image = None
        for index in order[fired]:  # a loop over boxes; the pixel work inside is vectorised
            y0, y1, x0, x1 = _box_pixels(sample.boxes[index], sample.height, sample.width)
            if y1 <= y0 or x1 <= x0:
                continue
            if image is None:
                image = np.array(sample.image, dtype=np.uint8)
            image[y0:y1, x0:x1] = crop_fn(image[y0:y1, x0:x1], rng)
        return sample if image is None else _with_image(sample, image)

    return op


def _only_translate(horizontal: bool) -> Callable[[int, np.random.Generator], CropFn]:
    def make(level: int, rng: np.random.Generator) -> CropFn:
        pixels = int(round(_random_sign(rng) * level / MAX_LEVEL * TRANSLATE_BBOX_CONST))
        dx, dy = (pixels, 0) if horizontal else (0, pixels)
        return lambda crop, _rng: translate(crop, dx, dy, FILL)

    return make


def _only_shear(horizontal: bool) -> Callable[[int, np.random.Generator], CropFn]:
    def make(level: int, rng: np.random.Generator) -> CropFn:
        matrix = shear_matrix(_random_sign(rng) * level / MAX_LEVEL * 0.3, horizontal)
        return lambda crop, _rng: affine_warp(crop, matrix, FILL)

    return make


def _only_rotate(level: int, rng: np.random.Generator) -> CropFn:
    degrees = _random_sign(rng) * level / MAX_LEVEL * 30.0
    return lambda crop, _rng: rotate(crop, degrees, FILL)


def _only_cutout(level: int, rng: np.random.Generator) -> CropFn:
    pad = int(level / MAX_LEVEL * CUTOUT_BBOX_CONST)

    def crop_fn(crop: np.ndarray, crop_rng: np.random.Generator) -> np.ndarray:
        center_y = int(crop_rng.integers(crop.shape[0]))
        center_x = int(crop_rng.integers(crop.shape[1]))
        return cutout(crop, center_y, center_x, pad, pad, FILL)

    return crop_fn


def _only_solarize(level: int, rng: np.random.Generator) -> CropFn:
    threshold = int(level / MAX_LEVEL * 256)
    return lambda crop, _rng: solarize(crop, threshold)


def _shear_magnitude(level: int) -> float:
    return level / MAX_LEVEL * 0.3


def _rotate_magnitude(level: int) -> float:
    return level / MAX_LEVEL * 30.0


OPS: dict[str, OpFn] = {
    "AutoContrast": _pixel_op(lambda image, level: autocontrast(image)),
    "Equalize": _pixel_op(lambda image, level: equalize(image)),
    "Posterize": _pixel_op(lambda image, level: posterize(image, int(level / MAX_LEVEL * 4))),
    "Solarize": _pixel_op(lambda image, level: solarize(image, int(level / MAX_LEVEL * 256))),
    "SolarizeAdd": _pixel_op(lambda image, level: solarize_add(image, int(level / MAX_LEVEL * 110))),
    "Color": _pixel_op(lambda image, level: color(image, _enhance_factor(level))),
    "Contrast": _pixel_op(lambda image, level: contrast(image, _enhance_factor(level))),
    "Brightness": _pixel_op(lambda image, level: brightness(image, _enhance_factor(level))),
    "Sharpness": _pixel_op(lambda image, level: sharpness(image, _enhance_factor(level))),
    "Cutout": _cutout_op,
    "BBox_Cutout": _bbox_cutout_op,
    "Rotate_BBox": _geometric_op(lambda s, deg: rotation_matrix(deg, s.height, s.width), _rotate_magnitude),
    "TranslateX_BBox": _translate_op(horizontal=True),
    "TranslateY_BBox": _translate_op(horizontal=False),
    "ShearX_BBox": _geometric_op(lambda s, level: shear_matrix(level, horizontal=True), _shear_magnitude),
    "ShearY_BBox": _geometric_op(lambda s, level: shear_matrix(level, horizontal=False), _shear_magnitude),
    "Rotate_Only_BBoxes": _bbox_only_op(_only_rotate),
    "ShearX_Only_BBoxes": _bbox_only_op(_only_shear(horizontal=True)),
    "ShearY_Only_BBoxes": _bbox_only_op(_only_shear(horizontal=False)),
    "TranslateX_Only_BBoxes": _bbox_only_op(_only_translate(horizontal=True)),
    "TranslateY_Only_BBoxes": _bbox_only_op(_only_translate(horizontal=False)),
    "Flip_Only_BBoxes": _bbox_only_op(lambda level, rng: lambda crop, _rng: np.array(crop[:, ::-1])),
    "Solarize_Only_BBoxes": _bbox_only_op(_only_solarize),
    "Equalize_Only_BBoxes": _bbox_only_op(lambda level, rng: lambda crop, _rng: equalize(crop)),
    "Cutout_Only_BBoxes": _bbox_only_op(_only_cutout),
}

BBOX_ONLY_OPS = frozenset(name for name in OPS if name.endswith("_Only_BBoxes"))


def apply_op(name: str, sample: Sample, rng: np.random.Generator, prob: float, level: int) -> Sample:
    """Apply the AutoAugment op ``name`` with probability ``prob`` at magnitude ``level`` (0..10).

    Whole-image ops fire as a whole with probability prob (one uniform draw). ``*_Only_BBoxes`` ops always run and
    alter each box's pixels independently with probability prob / 3. Boxes may be left outside the image (see the
    module docstring); the result is never inverted.
    """
    if name not in OPS:
        raise ValueError(f"unknown AutoAugment op {name!r}; valid ops: {sorted(OPS)}")
    check_probability(prob)
    if name not in BBOX_ONLY_OPS and rng.random() >= prob:
        return sample
    return OPS[name](sample, rng, level, prob)


class AutoAugment:
    """Detection AutoAugment with one of the learned policies "v0" (the paper's), "v1", "v2", "v3".

    One sub-policy is chosen uniformly per image and its ops are applied in order with ``apply_op``; boxes are clipped
    to the image (and degenerate ones dropped) after every op, as the reference clipped them inside each op.
    """

    def __init__(self, policy: str = "v0") -> None:
        if policy not in AUTOAUGMENT_POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; valid policies: {sorted(AUTOAUGMENT_POLICIES)}")
        self.policy = policy
        self.subpolicies = AUTOAUGMENT_POLICIES[policy]

    def sample_subpolicy(self, rng: np.random.Generator) -> int:
        """Index of a uniformly chosen sub-policy."""
        return int(rng.integers(len(self.subpolicies)))

    def apply_subpolicy(self, index: int, sample: Sample, rng: np.random.Generator) -> Sample:
        """Apply the ops of sub-policy ``index`` in order."""
        for name, prob, level in self.subpolicies[index]:
            sample = clip_and_filter(apply_op(name, sample, rng, prob, level))
        return sample

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return self.apply_subpolicy(self.sample_subpolicy(rng), sample, rng)

    def __repr__(self) -> str:
        return f"AutoAugment(policy={self.policy!r}, subpolicies={len(self.subpolicies)})"
