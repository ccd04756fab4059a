"""The embedded "digits" detection dataset: scenes of real handwritten digits, generated offline.

The glyphs are scikit-learn's bundled ``load_digits()`` (1797 handwritten digits, 8x8 pixels,
17 grey levels; shipped with scikit-learn, no download). Each scene is a textured canvas of
160..256 pixels a side holding 1..6 digits whose boxes span COCO's small, medium and large
buckets (about 40/40/20 % by count). Train scenes use the first 1400 glyphs, val scenes the
rest, so no handwriting sample is shared. Generation is deterministic in ``seed``: image ``i``
of a split depends only on ``(seed, split, i)``.

Layout written by :func:`ensure_digits`::

    {root}/digits/train/000000.png ...          {root}/digits/val/000000.png ...
    {root}/digits/annotations/{train,val}.json  (COCO; categories "0".."9" with ids 1..10)
    {root}/digits/meta.json                     (the generation parameters)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from od2.data.datasets.coco import load_coco_json
from od2.data.records import DatasetInfo

__all__ = [
    "DIGITS_CLASSES",
    "DigitsSplit",
    "Scene",
    "ensure_digits",
    "load_digits_split",
    "load_glyphs",
    "render_scene",
]

logger = logging.getLogger(__name__)

DIGITS_CLASSES = [str(d) for d in range(10)]
SPLITS = ("train", "val")
NUM_TRAIN_GLYPHS = 1400  # glyphs [0, 1400) draw train scenes, the remaining 397 val scenes
INK_THRESHOLD = 0.2  # a pixel is ink where the digit's alpha exceeds this; boxes are tight around ink
CANVAS_SIZE = (160, 256)  # inclusive range of canvas width and height
MAX_DIGITS = 6
# A placement is rejected where its box and a placed digit's box share more than this fraction
# of the smaller box. This implies IoU < 0.1 and also keeps small digits off large ones.
MAX_OVERLAP = 0.1
# (planned share of digits, min, max) of sqrt(box area): COCO small (< 32^2), medium, large
# (> 96^2). The ranges keep clear of the 32 and 96 bucket edges because the ink box ends up a
# pixel or two off the planned size. Large digits are planned more often than the 20 % wanted
# because the MAX_SIDE and canvas caps move some of them to medium; measured: 41/39/20 %.
SIZE_BUCKETS = ((0.35, 12.0, 29.0), (0.42, 36.0, 90.0), (0.23, 100.0, 128.0))
ASPECT_JITTER = 0.15
MAX_SIDE = 140  # longest side of a digit's ink, so narrow glyphs ("1") are not stretched very tall
MIN_INK_CONTRAST = 0.4  # luminance difference between ink and the background under it
_PLACEMENT_TRIES = 64
_COLOUR_CANDIDATES = 256
_FORMAT_VERSION = 1
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
    """Where one generated split lives: a COCO json and the folder its ``file_name`` s are in."""

    json_file: Path
    image_root: Path


def ensure_digits(
    root: str | os.PathLike,
    *,
    num_train: int = 2000,
    num_val: int = 300,
    seed: int = 0,
) -> dict[str, DigitsSplit]:
    """Generate ``{root}/digits`` unless it exists; return ``{"train": ..., "val": ...}``.

    Safe when several processes (DDP ranks) call it at once: each generates into its own
    ``{root}/digits.tmp-<pid>-*`` folder and renames it to ``{root}/digits``; a process that
    loses the race discards its copy (the copies are identical).

    Raises:
        ValueError: ``{root}/digits`` exists but was generated with other parameters, or not
            by this function.
    """
    final = Path(root) / "digits"
    params = {"format_version": _FORMAT_VERSION, "seed": seed, "num_train": num_train, "num_val": num_val}
    if not final.exists():
        _generate_atomically(final, params)
    _check_params(final, params)
    return {s: DigitsSplit(final / "annotations" / f"{s}.json", final / s) for s in SPLITS}


def load_digits_split(root: str | os.PathLike, split: str, **generate_kwargs: Any) -> DatasetInfo:
    """``DatasetInfo`` named ``digits_{split}``, generating the dataset first if needed.

    Args:
        split: ``"train"`` or ``"val"``.
        generate_kwargs: passed to :func:`ensure_digits` (``num_train``, ``num_val``, ``seed``).
    """
    if split not in SPLITS:
        raise ValueError(f"digits has splits {SPLITS}, not {split!r}")
    paths = ensure_digits(root, **generate_kwargs)[split]
    return load_coco_json(paths.json_file, paths.image_root, name=f"digits_{split}")


def load_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits: float32 [1797, 8, 8] intensities in [0, 1], int64 [1797] labels."""
    from sklearn.datasets import load_digits  # imported here: sklearn import takes about a second

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


@dataclasses.dataclass
class Scene:
    """One rendered scene.

    Attributes:
        image: uint8 [H, W, 3] RGB.
        boxes: float32 [N, 4] XYXY, tight around each digit's ink (alpha > INK_THRESHOLD).
        labels: int64 [N] digit values 0..9.
        patches: N ``(alpha float32 [h, w], x, y)``: each digit's alpha and where its top-left went.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    patches: list[tuple[np.ndarray, int, int]]

    def alpha_maps(self) -> np.ndarray:
        """float32 [N, H, W]: each digit's alpha on the whole canvas."""
        maps = np.zeros((len(self.patches), *self.image.shape[:2]), dtype=np.float32)
        for m, (alpha, x, y) in zip(maps, self.patches):
            m[y : y + alpha.shape[0], x : x + alpha.shape[1]] = alpha
        return maps


def render_scene(rng: np.random.Generator, glyphs: np.ndarray, glyph_labels: np.ndarray) -> Scene:
    """Render one scene of 1..MAX_DIGITS digits drawn from ``glyphs`` (float32 [G, 8, 8] in [0, 1]).

    Digits are placed largest first at random positions where their box and each placed box
    share less than MAX_OVERLAP of the smaller one; a digit that finds no such position is left
    out. The first always fits: every glyph has ink above INK_THRESHOLD and is sized to the canvas.
    """
    height, width = (int(v) for v in rng.integers(CANVAS_SIZE[0], CANVAS_SIZE[1] + 1, size=2))
    canvas = _background(rng, height, width)
    num = int(rng.integers(1, MAX_DIGITS + 1))
    picks = rng.integers(len(glyphs), size=num)
    alphas = [_render_digit(rng, glyphs[g], height, width) for g in picks]
    order = np.argsort([-a.size for a in alphas], kind="stable")

    boxes: list[np.ndarray] = []
    labels: list[int] = []
    patches: list[tuple[np.ndarray, int, int]] = []
    for i in order:
        alpha = alphas[i]
        placed = _place(rng, alpha, height, width, np.array(boxes, dtype=np.float32).reshape(-1, 4))
        if placed is None:
            continue
        x, y, box = placed
        _composite(rng, canvas, alpha, x, y)
        boxes.append(box)
        labels.append(int(glyph_labels[picks[i]]))
        patches.append((alpha, x, y))
    image = (np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Scene(
        image=image,
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        patches=patches,
    )


def _generate_atomically(final: Path, params: dict[str, int]) -> None:
    """Write the dataset to a private temp folder, then rename it to ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the dataset may live in a shared root
    try:
        start = time.perf_counter()
        _write_dataset(tmp, params)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            logger.info("%s was generated by another process meanwhile; using it", final)
        else:
            logger.info("generated %s in %.1f s", final, time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_params(final: Path, params: dict[str, int]) -> None:
    """Raise if ``final`` holds a dataset generated with other parameters."""
    meta_file = final / "meta.json"
    if not meta_file.is_file():
        raise ValueError(
            f"{final} exists but has no meta.json, so od2 did not generate it; remove it to regenerate"
        )
    meta = json.loads(meta_file.read_text())
    if meta != params:
        raise ValueError(
            f"{final} was generated with {meta}, but {params} was asked for; remove the folder to regenerate"
        )


def _write_dataset(out: Path, params: dict[str, int]) -> None:
    """Render both splits into ``out`` (images, annotations, and meta.json last)."""
    glyphs, glyph_labels = load_glyphs()
    pools = {"train": slice(0, NUM_TRAIN_GLYPHS), "val": slice(NUM_TRAIN_GLYPHS, None)}
    (out / "annotations").mkdir()
    for split_code, split in enumerate(SPLITS):
        pool = pools[split]
        coco = _write_split(
            out / split, params[f"num_{split}"], params["seed"], split_code, glyphs[pool], glyph_labels[pool]
        )
        (out / "annotations" / f"{split}.json").write_text(json.dumps(coco, separators=(",", ":")))
    (out / "meta.json").write_text(json.dumps(params))


def _write_split(
    image_dir: Path, num_images: int, seed: int, split_code: int, glyphs: np.ndarray, glyph_labels: np.ndarray
) -> dict[str, Any]:
    """Render ``num_images`` scenes as PNGs into ``image_dir``; return their COCO ground truth."""
    image_dir.mkdir()

    def render_and_save(i: int) -> Scene:
        scene = render_scene(np.random.default_rng([seed, split_code, i]), glyphs, glyph_labels)
        # compress_level 1: several times faster to encode than the default level 6.
        Image.fromarray(scene.image).save(image_dir / f"{i:06d}.png", compress_level=1)
        return scene

    images, annotations = [], []
    # One thread on purpose: BLAS calls from several Python threads at once gave (rarely) different bytes,
    # and threads were only 10-20% faster.
    for i, scene in enumerate(map(render_and_save, range(num_images))):
        height, width = scene.image.shape[:2]
        images.append({"id": i + 1, "file_name": f"{i:06d}.png", "height": height, "width": width})
        for (x1, y1, x2, y2), label in zip(scene.boxes.tolist(), scene.labels.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(DIGITS_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _render_digit(rng: np.random.Generator, glyph: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upscale one 8x8 glyph (bilinear) to a sampled size; return its alpha, float32 [h, w] in [0, 1].

    The glyph is cropped to its ink and padded with one blank pixel, so strokes fade out at the
    patch border and the ink spans the sampled size. Size: sqrt(area) from a bucket of
    SIZE_BUCKETS, aspect = the glyph's own times 1 +- ASPECT_JITTER, shrunk to at most MAX_SIDE
    and to fit the canvas.
    """
    rows = np.flatnonzero(glyph.any(axis=1))
    cols = np.flatnonzero(glyph.any(axis=0))
    ink = glyph[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ink_h, ink_w = ink.shape
    shares, lows, highs = zip(*SIZE_BUCKETS)
    bucket = rng.choice(len(SIZE_BUCKETS), p=shares)
    side = rng.uniform(lows[bucket], highs[bucket])
    aspect = ink_w / ink_h * rng.uniform(1.0 - ASPECT_JITTER, 1.0 + ASPECT_JITTER)
    target_h, target_w = side / np.sqrt(aspect), side * np.sqrt(aspect)
    # The padding pixel on each side scales along with the ink.
    patch_h, patch_w = target_h * (ink_h + 2) / ink_h, target_w * (ink_w + 2) / ink_w
    shrink = min(1.0, MAX_SIDE / max(target_h, target_w), height / patch_h, width / patch_w)
    size = (max(3, int(patch_w * shrink)), max(3, int(patch_h * shrink)))
    padded = np.pad(ink, 1).astype(np.float32)
    alpha = np.asarray(Image.fromarray(padded).resize(size, Image.BILINEAR))
    return np.clip(alpha, 0.0, 1.0)


def _place(
    rng: np.random.Generator, alpha: np.ndarray, height: int, width: int, placed: np.ndarray
) -> tuple[int, int, np.ndarray] | None:
    """Pick a top-left ``(x, y)`` for ``alpha`` [h, w] inside the canvas, away from ``placed`` [P, 4].

    Returns ``(x, y, box)`` with ``box`` float32 [4] the ink's tight XYXY box on the canvas,
    or None when no ink exceeds INK_THRESHOLD or all tried positions overlap too much.
    """
    ink = alpha > INK_THRESHOLD
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if len(rows) == 0:
        return None
    local = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)
    xs = rng.integers(0, width - alpha.shape[1] + 1, size=_PLACEMENT_TRIES)
    ys = rng.integers(0, height - alpha.shape[0] + 1, size=_PLACEMENT_TRIES)
    candidates = local + np.stack([xs, ys, xs, ys], axis=1).astype(np.float32)
    if len(placed):
        ok = np.flatnonzero((_overlap(candidates, placed) < MAX_OVERLAP).all(axis=1))
        if len(ok) == 0:
            return None
        first = int(ok[0])
    else:
        first = 0
    return int(xs[first]), int(ys[first]), candidates[first]


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area of XYXY boxes a [A, 4] and b [B, 4] -> [A, B]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0.0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.minimum(area_a[:, None], area_b[None, :])


def _composite(rng: np.random.Generator, canvas: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Paint ``alpha`` [h, w] onto ``canvas`` [H, W, 3] at ``(x, y)`` in an ink colour contrasting
    with the background under it (luminance difference >= MIN_INK_CONTRAST)."""
    region = canvas[y : y + alpha.shape[0], x : x + alpha.shape[1]]
    background_luma = float(region.mean(axis=(0, 1)) @ _LUMA)
    candidates = rng.uniform(0.0, 1.0, size=(_COLOUR_CANDIDATES, 3)).astype(np.float32)
    ok = np.flatnonzero(np.abs(candidates @ _LUMA - background_luma) >= MIN_INK_CONTRAST)
    if len(ok):
        ink = candidates[ok[0]]
    else:
        ink = np.full(3, 0.0 if background_luma > 0.5 else 1.0, dtype=np.float32)
    a = alpha[..., None]
    region *= 1.0 - a
    region += a * ink


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background, float32 [H, W, 3] in [0, 1].

    A dark or light base colour, plus smooth noise at two scales, a linear gradient and 0..3
    faint straight lines. Apart from the lines, luminance stays within about 0.15 of the base,
    which is below 0.3 or above 0.7, so an ink colour that contrasts with it always exists.
    """
    dark = rng.random() < 0.5
    base = _colour_with_luma(rng, (0.05, 0.3) if dark else (0.7, 0.95))
    canvas = np.broadcast_to(base, (height, width, 3)).copy()
    canvas += 0.06 * _smooth_noise(rng, height, width, cells=3)
    canvas += 0.03 * _smooth_noise(rng, height, width, cells=12)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (
        np.cos(angle) * np.linspace(-1.0, 1.0, width)[None, :]
        + np.sin(angle) * np.linspace(-1.0, 1.0, height)[:, None]
    )
    canvas += 0.04 * ramp[..., None].astype(np.float32) * rng.uniform(-1.0, 1.0, size=3).astype(np.float32)
    _draw_lines(rng, canvas, num=int(rng.integers(0, 4)))
    return np.clip(canvas, 0.0, 1.0)


def _colour_with_luma(rng: np.random.Generator, luma_range: tuple[float, float]) -> np.ndarray:
    """A random RGB colour, float32 [3] in [0, 1], whose luminance lies in ``luma_range``."""
    candidates = rng.uniform(0.0, 1.0, size=(_COLOUR_CANDIDATES, 3)).astype(np.float32)
    luma = candidates @ _LUMA
    ok = np.flatnonzero((luma >= luma_range[0]) & (luma <= luma_range[1]))
    if len(ok):
        return candidates[ok[0]]
    return np.full(3, sum(luma_range) / 2.0, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Noise in [-1, 1] bilinearly interpolated from a (cells+1)^2 grid: float32 [H, W, 3]."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1, 3)).astype(np.float32)
    rows = _interp_matrix(height, cells + 1)
    cols = _interp_matrix(width, cells + 1)
    per_row = (rows @ grid.reshape(cells + 1, -1)).reshape(height, cells + 1, 3)
    return (per_row.transpose(0, 2, 1) @ cols.T).transpose(0, 2, 1)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation weights float32 [n_out, n_in] from n_in evenly spaced samples."""
    pos = np.linspace(0.0, n_in - 1, n_out)
    lo = np.minimum(pos.astype(np.int64), n_in - 2)
    frac = (pos - lo).astype(np.float32)
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    weights[np.arange(n_out), lo] = 1.0 - frac
    weights[np.arange(n_out), lo + 1] = frac
    return weights


def _draw_lines(rng: np.random.Generator, canvas: np.ndarray, num: int) -> None:
    """Blend ``num`` faint random straight lines of one random colour into ``canvas`` [H, W, 3]."""
    if num == 0:
        return
    height, width = canvas.shape[:2]
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(num):
        x0, x1 = rng.uniform(0, width, size=2)
        y0, y1 = rng.uniform(0, height, size=2)
        draw.line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(1, 3)))
    alpha = np.asarray(mask, dtype=np.float32)[..., None] * (rng.uniform(0.1, 0.25) / 255.0)
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    canvas *= 1.0 - alpha
    canvas += alpha * colour
