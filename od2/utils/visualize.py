"""Draw detections (or ground truth) on images and tile drawn images into one PNG.

Images are uint8 numpy arrays [H, W, 3] (RGB); boxes are absolute XYXY pixels of that image.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def class_color(label: int) -> tuple[int, int, int]:
    """Return the RGB colour used for class ``label``: the same on every call, distinct for nearby labels.

    Hues step by the golden ratio, so consecutive labels land far apart on the colour wheel.
    """
    hue = (int(label) * _GOLDEN_RATIO_CONJUGATE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (ITU-R BT.601 luma)."""
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _caption(label: int, score: float | None, class_names: Sequence[str]) -> str:
    """``"name 0.87"`` for a detection, ``"name"`` for ground truth; unknown labels show their number."""
    name = class_names[label] if 0 <= label < len(class_names) else str(label)
    return name if score is None else f"{name} {score:.2f}"


def _draw_caption(
    draw: ImageDraw.ImageDraw,
    text: str,
    box: tuple[float, float, float, float],
    color: tuple[int, int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    image_size: tuple[int, int],
) -> None:
    """Draw ``text`` on a filled ``color`` background above the box's top-left corner.

    The caption goes inside the box when there is no room above it, and is shifted left or up as
    needed so that it stays inside the image.
    """
    width, height = image_size
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_w, text_h = right - left + 2, bottom - top + 2
    x = min(max(box[0], 0), max(width - text_w, 0))
    y = box[1] - text_h if box[1] - text_h >= 0 else max(box[1], 0)
    y = min(y, max(height - text_h, 0))
    draw.rectangle((x, y, x + text_w - 1, y + text_h - 1), fill=color)
    draw.text((x + 1 - left, y + 1 - top), text, fill=_text_color(color), font=font)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray | None,
    class_names: Sequence[str],
    score_thresh: float = 0.3,
    line_width: int = 2,
    font_size: int = 12,
) -> np.ndarray:
    """Return a copy of ``image`` with boxes and ``"name score"`` captions drawn in per-class colours.

    Args:
        image: uint8 [H, W, 3] RGB.
        boxes: [M, 4] absolute XYXY pixels of ``image`` (numpy array or CPU tensor).
        labels: [M] contiguous class labels, indexing ``class_names``.
        scores: [M] confidences; boxes below ``score_thresh`` are skipped. ``None`` draws every box
            with a name-only caption (ground truth).
        class_names: name of each contiguous label.
        score_thresh: minimum score of a drawn detection.
        line_width: outline width in pixels.
        font_size: caption font size in pixels.

    Returns:
        uint8 [H, W, 3], the input untouched.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {list(image.shape)}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores_arr = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(labels) != len(boxes) or (scores_arr is not None and len(scores_arr) != len(boxes)):
        raise ValueError("boxes, labels and scores must have the same length")

    height, width = image.shape[:2]
    x1, y1, x2, y2 = boxes.T
    drawable = (x1 <= x2) & (y1 <= y2) & (x1 < width) & (y1 < height) & (x2 >= 0) & (y2 >= 0)
    # Clip so that boxes crossing the border keep a visible outline.
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width - 1)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height - 1)
    if scores_arr is None:
        keep = np.flatnonzero(drawable)
    else:
        keep = np.flatnonzero(drawable & (scores_arr >= score_thresh))
        keep = keep[np.argsort(scores_arr[keep], kind="stable")]  # best detections drawn last, on top

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=font_size)
    for i in keep:
        box = tuple(float(v) for v in clipped[i])
        color = class_color(int(labels[i]))
        draw.rectangle(box, outline=color, width=line_width)
        score = None if scores_arr is None else float(scores_arr[i])
        _draw_caption(draw, _caption(int(labels[i]), score, class_names), box, color, font, (width, height))
    return np.asarray(canvas)


def save_prediction_grid(
    images: Sequence[np.ndarray],
    path: str | os.PathLike,
    ncols: int = 4,
    spacing: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Tile uint8 [H, W, 3] images into one PNG at ``path`` and return the grid array.

    Every cell is as large as the largest image; smaller images sit at their cell's top-left corner,
    padded with ``background``. Cells are ``spacing`` pixels apart. The grid is
    ``min(ncols, n)`` cells wide and ``ceil(n / ncols)`` cells high.
    """
    if not images:
        raise ValueError("save_prediction_grid needs at least one image")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    cell_h = max(img.shape[0] for img in images)
    cell_w = max(img.shape[1] for img in images)
    cols = min(ncols, len(images))
    rows = math.ceil(len(images) / ncols)
    grid = np.empty((rows * cell_h + (rows - 1) * spacing, cols * cell_w + (cols - 1) * spacing, 3), np.uint8)
    grid[:] = background
    for index, img in enumerate(images):
        top = (index // ncols) * (cell_h + spacing)
        left = (index % ncols) * (cell_w + spacing)
        grid[top : top + img.shape[0], left : left + img.shape[1]] = img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path, format="PNG")
    return grid
