"""Geometric transforms of one image and its boxes.

Protocol
--------
A transform is any callable ``transform(sample: Sample, rng: numpy.random.Generator) -> Sample``.

- ``Sample.image`` is uint8 [H, W, 3] RGB with arbitrary strides (it is often a channels-last view of a CHW buffer, as
  ``torchvision.io`` decodes it). ``Sample.boxes`` is float32 [N, 4] XYXY in absolute pixels of that image with
  pixel-edge coordinates (a box covering pixel columns 0..9 has x1=0, x2=10), so a resize maps a box by scaling its
  coordinates by new/old size per axis. ``Sample.labels`` is int64 [N], aligned with ``boxes``.
- A transform returns a new ``Sample`` and never writes into the arrays it received.
- All randomness is drawn from ``rng``, which the caller seeds per draw; transforms hold no random state, so a result
  does not depend on the process or data-loader worker that computes it.
- A transform that removes boxes uses ``Sample.select(keep)`` so labels stay aligned.
- ``Compose`` calls ``clip_and_filter`` after every transform: boxes are clipped to the image and boxes thinner than
  ``MIN_BOX_SIDE`` pixels (or NaN) are dropped with their labels. A transform may therefore leave boxes partly or wholly
  outside its output image, and it always receives clipped boxes of positive width and height. Boxes are never
  inverted: x1 <= x2 and y1 <= y2 always hold after ``Compose``.

Pixel work goes through ``torch`` on zero-copy views of the numpy arrays: on CPU its uint8 antialiased bilinear resize
gives the same pixels as PIL's ``BILINEAR`` in about a third of the time, and ``torch.flip`` keeps the memory layout.
Later augmentations (AutoAugment ops, Stitch) are added as further classes following this protocol; a batch-level one
such as Stitch maps ``(list[Sample], rng) -> list[Sample]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MIN_BOX_SIDE",
    "Compose",
    "RandomHorizontalFlip",
    "ResizeShortestEdge",
    "Sample",
    "Transform",
    "check_probability",
    "clip_and_filter",
    "image_as_tensor",
    "resize_image",
    "resized_hw",
]

# Boxes narrower or shorter than this (in output pixels) are dropped after every transform.
MIN_BOX_SIDE = 1e-3


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image with its boxes.

    Attributes:
        image: uint8 [H, W, 3] RGB, any strides.
        boxes: float32 [N, 4] XYXY, absolute pixels of ``image``.
        labels: int64 [N], contiguous class labels aligned with ``boxes``.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def select(self, keep: np.ndarray) -> Sample:
        """Keep the boxes and labels where ``keep`` (bool [N]) is True."""
        return dataclasses.replace(self, boxes=self.boxes[keep], labels=self.labels[keep])


class Transform(Protocol):
    """A transform of one sample; see the module docstring for the contract."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


def check_probability(prob: float) -> float:
    """``prob`` as a float; ValueError unless it is in [0, 1]."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    return float(prob)


def clip_and_filter(sample: Sample, min_side: float = MIN_BOX_SIDE) -> Sample:
    """Clip boxes to [0, W] x [0, H] and drop those whose width or height is below ``min_side`` (NaN boxes too)."""
    limits = np.array([sample.width, sample.height, sample.width, sample.height], dtype=np.float32)
    boxes = np.clip(sample.boxes, 0.0, limits).astype(np.float32, copy=False)
    sides = boxes[:, 2:] - boxes[:, :2]
    keep = (sides >= min_side).all(axis=1)
    clipped = dataclasses.replace(sample, boxes=boxes)
    return clipped if keep.all() else clipped.select(keep)


class Compose:
    """Apply transforms in order, clipping and filtering boxes after each one."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = clip_and_filter(transform(sample, rng))
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def image_as_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 tensor [H, W, 3] sharing the memory of a uint8 [H, W, 3] array.

    The array is copied only if torch cannot share it: negative strides (a numpy flip view) or read-only memory.
    """
    if not image.flags.writeable or any(stride < 0 for stride in image.strides):
        image = np.array(image)
    return torch.from_numpy(image)


def resized_hw(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """Output (h, w) for resizing an image's shorter side to ``short_edge`` with the longer side capped at ``max_size``.

    scale = min(short_edge / min(H, W), max_size / max(H, W)); h = floor(H * scale + 0.5), w = floor(W * scale + 0.5).
    """
    scale = min(short_edge / min(height, width), max_size / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (antialiased when shrinking, half-pixel centres) of uint8 [H, W, 3] to [height, width, 3]."""
    if image.shape[:2] == (height, width):
        return image
    nchw = image_as_tensor(image).permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(nchw, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).numpy()


class ResizeShortestEdge:
    """Resize so the shorter side is a sampled length, the longer side capped at ``max_size``.

    The short side s is drawn uniformly from ``short_edge_lengths`` (``sample_style="choice"``) or uniformly from the
    integers in [lo, hi] (``"range"``, two lengths). The output size follows ``resized_hw`` (detectron2's rule): when
    the cap binds, the short side ends up below s and the aspect ratio is kept. The original object_detection2
    additionally forced the short side up to s in that case, distorting the aspect ratio; od2 does not.
    Boxes are scaled by the output/input size ratio per axis.
    """

    def __init__(self, short_edge_lengths: Sequence[int], max_size: int, sample_style: str = "choice") -> None:
        lengths = tuple(int(s) for s in short_edge_lengths)
        if not lengths or min(lengths) <= 0:
            raise ValueError(f"short_edge_lengths must be positive integers, got {short_edge_lengths!r}")
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        if sample_style not in ("choice", "range"):
            raise ValueError(f"sample_style must be 'choice' or 'range', got {sample_style!r}")
        if sample_style == "range" and (len(lengths) != 2 or lengths[0] > lengths[1]):
            raise ValueError(f"sample_style='range' needs (lo, hi) with lo <= hi, got {lengths}")
        self.short_edge_lengths = lengths
        self.max_size = int(max_size)
        self.sample_style = sample_style

    def sample_short_edge(self, rng: np.random.Generator) -> int:
        """Draw the target short-side length."""
        if self.sample_style == "range":
            return int(rng.integers(self.short_edge_lengths[0], self.short_edge_lengths[1], endpoint=True))
        return self.short_edge_lengths[int(rng.integers(len(self.short_edge_lengths)))]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        new_h, new_w = resized_hw(sample.height, sample.width, self.sample_short_edge(rng), self.max_size)
        factors = np.array([new_w / sample.width, new_h / sample.height] * 2, dtype=np.float32)
        return dataclasses.replace(
            sample, image=resize_image(sample.image, new_h, new_w), boxes=sample.boxes * factors
        )

    def __repr__(self) -> str:
        return (
            f"ResizeShortestEdge(short_edge_lengths={self.short_edge_lengths}, max_size={self.max_size}, "
            f"sample_style={self.sample_style!r})"
        )


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``prob``; boxes map to x1' = W - x2, x2' = W - x1."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = check_probability(prob)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        # Always draw, so the random stream of later transforms does not depend on prob.
        if rng.random() >= self.prob:
            return sample
        image = image_as_tensor(sample.image).flip(1).numpy()
        boxes = sample.boxes[:, [2, 1, 0, 3]]
        boxes[:, [0, 2]] = sample.width - boxes[:, [0, 2]]
        return dataclasses.replace(sample, image=image, boxes=boxes)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"
