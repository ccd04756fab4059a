"""WAA ("W AutoAugment"): object_detection2's hand-written whole-image approximation of detection AutoAugment v0.

Per image one of five branches is chosen uniformly (``RandomSelectSubTransform``), then boxes are clipped to the image
and those with area < 2 px^2 removed (``RemoveZeroAreaBBox(2)``, here measured on this image, before any resize):

1. ``WRandomTranslate(horizontal, 60 px, p=0.6)`` then ``WRandomEqualize(p=0.8)``;
2. ``WRandomTranslate(vertical, 40 px, p=0.6)`` then ``WRandomCutout(pad 8, p=0.8)``;
3. ``WShear(vertical, +0.06)`` (always) then ``WRandomTranslate(vertical, 40 px, p=0.6)``;
4. ``RandomRotateAnyAngle(+-30 degrees, p=0.6)`` then ``WColor(1.18)`` (always);
5. identity.

Magnitudes mirror v0 (ShearY level 2 -> 0.06, Rotate level 10 -> 30 degrees, Color level 6 -> 1.18); the translation
grows the canvas instead of shifting content out of it. Pixel functions come from ``od2.data.autoaugment``.

Deliberate deviations from the 2020 original (which worked on instance masks when present):

- ``RandomRotateAnyAngle`` maps each box to the axis-aligned box of its rotated corners. The original recomputed boxes
  from rotated instance masks and, without masks, left the boxes unchanged although the image rotated - a bug, since
  od2 samples carry no masks. ``WShear`` likewise shears box corners (the original's own no-mask fallback).
- The rotation samples NEAREST (exact pixels, like the AutoAugment warps) about the image centre with fill 0; the
  original used an OpenCV affine warp.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from od2.data.autoaugment import (
    affine_warp,
    color,
    cutout,
    equalize,
    rotation_matrix,
    shear_matrix,
    transform_boxes,
)
from od2.data.transforms import Sample, Transform, check_probability, clip_and_filter

__all__ = [
    "RandomRotateAnyAngle",
    "RemoveSmallBoxes",
    "WAutoAugment",
    "WColor",
    "WRandomCutout",
    "WRandomEqualize",
    "WRandomTranslate",
    "WShear",
]


class WRandomTranslate:
    """With probability ``prob`` pad ``pixels`` columns on the left (horizontal) or rows on the top (vertical).

    The canvas grows (W + pixels or H + pixels), the pad has value ``fill``, boxes shift by +pixels; nothing is cropped.
    """

    def __init__(self, pixels: int = 60, prob: float = 0.6, horizontal: bool = True, fill: int = 127) -> None:
        if pixels < 0:
            raise ValueError(f"pixels must be >= 0, got {pixels}")
        self.pixels = int(pixels)
        self.prob = check_probability(prob)
        self.horizontal = bool(horizontal)
        self.fill = int(fill)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        height, width, channels = sample.image.shape
        if self.horizontal:
            image = np.full((height, width + self.pixels, channels), self.fill, dtype=np.uint8)
            image[:, self.pixels :] = sample.image
            offset = np.array([self.pixels, 0, self.pixels, 0], dtype=np.float32)
        else:
            image = np.full((height + self.pixels, width, channels), self.fill, dtype=np.uint8)
            image[self.pixels :] = sample.image
            offset = np.array([0, self.pixels, 0, self.pixels], dtype=np.float32)
        return dataclasses.replace(sample, image=image, boxes=sample.boxes + offset)

    def __repr__(self) -> str:
        direction = "horizontal" if self.horizontal else "vertical"
        return f"WRandomTranslate({direction}, pixels={self.pixels}, prob={self.prob}, fill={self.fill})"


class WRandomEqualize:
    """Per-channel histogram equalisation (``autoaugment.equalize``) with probability ``prob``."""

    def __init__(self, prob: float = 0.8) -> None:
        self.prob = check_probability(prob)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        return dataclasses.replace(sample, image=equalize(sample.image))

    def __repr__(self) -> str:
        return f"WRandomEqualize(prob={self.prob})"


class WRandomCutout:
    """With probability ``prob`` fill one (2 pad) x (2 pad) square at a uniform pixel centre with ``fill``, clipped."""

    def __init__(self, pad_size: int = 8, prob: float = 0.8, fill: int = 0) -> None:
        self.pad_size = int(pad_size)
        self.prob = check_probability(prob)
        self.fill = int(fill)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        center_y = int(rng.integers(sample.height))
        center_x = int(rng.integers(sample.width))
        image = cutout(sample.image, center_y, center_x, self.pad_size, self.pad_size, self.fill)
        return dataclasses.replace(sample, image=image)

    def __repr__(self) -> str:
        return f"WRandomCutout(pad_size={self.pad_size}, prob={self.prob}, fill={self.fill})"


class WShear:
    """Always shear by a fixed ``level`` (AutoAugment shear_y or shear_x, NEAREST, ``fill``); boxes from corners."""

    def __init__(self, level: float = 0.06, horizontal: bool = False, fill: int = 128) -> None:
        self.level = float(level)
        self.horizontal = bool(horizontal)
        self.fill = int(fill)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        matrix = shear_matrix(self.level, self.horizontal)
        return dataclasses.replace(
            sample, image=affine_warp(sample.image, matrix, self.fill), boxes=transform_boxes(sample.boxes, matrix)
        )

    def __repr__(self) -> str:
        direction = "horizontal" if self.horizontal else "vertical"
        return f"WShear({direction}, level={self.level}, fill={self.fill})"


class RandomRotateAnyAngle:
    """With probability ``prob`` rotate by an angle ~ U(-max_angle, max_angle) degrees about the image centre.

    Same canvas, NEAREST, ``fill`` outside; boxes become the axis-aligned boxes of their rotated corners.
    """

    def __init__(self, max_angle: float = 30.0, prob: float = 0.6, fill: int = 0) -> None:
        self.max_angle = float(max_angle)
        self.prob = check_probability(prob)
        self.fill = int(fill)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        angle = float(rng.uniform(-self.max_angle, self.max_angle))
        matrix = rotation_matrix(angle, sample.height, sample.width)
        return dataclasses.replace(
            sample, image=affine_warp(sample.image, matrix, self.fill), boxes=transform_boxes(sample.boxes, matrix)
        )

    def __repr__(self) -> str:
        return f"RandomRotateAnyAngle(max_angle={self.max_angle}, prob={self.prob}, fill={self.fill})"


class WColor:
    """Always blend with the grey image by ``factor`` (AutoAugment Color; 1.18 = v0's Color level 6)."""

    def __init__(self, factor: float = 1.18) -> None:
        self.factor = float(factor)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return dataclasses.replace(sample, image=color(sample.image, self.factor))

    def __repr__(self) -> str:
        return f"WColor(factor={self.factor})"


class RemoveSmallBoxes:
    """Drop boxes (with their labels) whose area is below ``min_area`` px^2 (``RemoveZeroAreaBBox``)."""

    def __init__(self, min_area: float = 2.0) -> None:
        self.min_area = float(min_area)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sides = sample.boxes[:, 2:] - sample.boxes[:, :2]
        keep = sides[:, 0] * sides[:, 1] >= self.min_area
        return sample if keep.all() else sample.select(keep)

    def __repr__(self) -> str:
        return f"RemoveSmallBoxes(min_area={self.min_area})"


class WAutoAugment:
    """The WAA policy: one of 5 branches chosen uniformly (the last is identity), then small boxes removed."""

    def __init__(
        self,
        translate_x_pixels: int = 60,
        translate_y_pixels: int = 40,
        translate_prob: float = 0.6,
        translate_fill: int = 127,
        equalize_prob: float = 0.8,
        cutout_pad_size: int = 8,
        cutout_prob: float = 0.8,
        cutout_fill: int = 0,
        shear_level: float = 0.06,
        shear_fill: int = 128,
        rotate_max_angle: float = 30.0,
        rotate_prob: float = 0.6,
        rotate_fill: int = 0,
        color_factor: float = 1.18,
        min_area: float = 2.0,
    ) -> None:
        translate_y = WRandomTranslate(translate_y_pixels, translate_prob, horizontal=False, fill=translate_fill)
        self.branches: list[list[Transform]] = [
            [
                WRandomTranslate(translate_x_pixels, translate_prob, horizontal=True, fill=translate_fill),
                WRandomEqualize(equalize_prob),
            ],
            [translate_y, WRandomCutout(cutout_pad_size, cutout_prob, cutout_fill)],
            [WShear(shear_level, horizontal=False, fill=shear_fill), translate_y],
            [RandomRotateAnyAngle(rotate_max_angle, rotate_prob, rotate_fill), WColor(color_factor)],
            [],
        ]
        self.remove_small = RemoveSmallBoxes(min_area)

    def sample_branch(self, rng: np.random.Generator) -> int:
        """Index of a uniformly chosen branch."""
        return int(rng.integers(len(self.branches)))

    def apply_branch(self, index: int, sample: Sample, rng: np.random.Generator) -> Sample:
        """Apply branch ``index``, clipping boxes after each step, then remove boxes smaller than ``min_area``."""
        for transform in self.branches[index]:
            sample = clip_and_filter(transform(sample, rng))
        return self.remove_small(clip_and_filter(sample), rng)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return self.apply_branch(self.sample_branch(rng), sample, rng)

    def __repr__(self) -> str:
        branches = ", ".join("[" + ", ".join(repr(t) for t in branch) + "]" for branch in self.branches)
        return f"WAutoAugment(branches=[{branches}], {self.remove_small!r})"
