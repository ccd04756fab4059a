"""Batch-level stitching: the log's "Stitch" (two images in one canvas) and the Stitcher paper's 2x2 mosaic.

Both run inside the training loader's collate function (so in DataLoader workers) on the transformed samples of
one batch, before padding, and draw their randomness from a generator seeded by the batch's first draw number.

``Stitch`` (original-spec §6, the original object_detection2 ``transform.py:Stitch``): with probability p, two
images i, j of the batch are fitted (aspect kept) side by side or stacked into one canvas of the batch's padded
size, whichever layout leaves less of the canvas uncovered; the composite replaces image i, image j stays.

``mosaic_2x2`` (Chen et al. 2020, "Stitcher: Feedback-driven Data Provider for Object Detection"): four images,
already resized to half the usual scale, are tiled 2x2 into one image of about the usual size. The feedback rule
(stitch the next batch when the previous iteration's share of box-regression loss from small objects is below a
threshold) lives in the training feed, :class:`od2.engine.train_feed.TrainFeed`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from od2.data.transforms import Sample, resize_image

__all__ = ["Stitch", "fitted_size", "mosaic_2x2", "stitch_pair"]


def fitted_size(width: int, height: int, slot_width: int, slot_height: int) -> tuple[int, int]:
    """(w, h) of an image scaled, aspect kept, to touch a slot's width or height without exceeding it.

    scale = min(slot_w / w, slot_h / h); sides are truncated to integers (at least 1), as the original does.
    """
    scale = min(slot_width / width, slot_height / height)
    return max(1, min(slot_width, int(width * scale))), max(1, min(slot_height, int(height * scale)))


def _place(canvas: np.ndarray, sample: Sample, top: int, left: int, width: int, height: int) -> np.ndarray:
    """Resize ``sample`` to (height, width), paste it at (top, left) of ``canvas``; its boxes in canvas pixels."""
    canvas[top:top + height, left:left + width] = resize_image(sample.image, height, width)
    scale = np.array([width / sample.width, height / sample.height] * 2, dtype=np.float32)
    offset = np.array([left, top, left, top], dtype=np.float32)
    return sample.boxes * scale + offset


def stitch_pair(first: Sample, second: Sample, canvas_hw: tuple[int, int]) -> Sample:
    """``first`` and ``second`` fitted into one canvas [H, W, 3], stacked or side by side.

    Stacked: ``first`` fitted into the top H//2 rows, ``second`` into the bottom H - H//2. Side by side: ``first``
    into the left W//2 columns, ``second`` into the right W - W//2. Stacked is chosen iff its uncovered area is
    not larger than side by side's. Each image sits in the top-left corner of its slot, the rest is zero. Boxes are
    scaled by fitted/original size per axis and offset by their slot's corner; ``first``'s boxes come first.
    """
    canvas_h, canvas_w = canvas_hw
    slots = {
        "stacked": ((0, 0, canvas_w, canvas_h // 2), (canvas_h // 2, 0, canvas_w, canvas_h - canvas_h // 2)),
        "side": ((0, 0, canvas_w // 2, canvas_h), (0, canvas_w // 2, canvas_w - canvas_w // 2, canvas_h)),
    }
    placements = {}
    for layout, pair_slots in slots.items():
        sizes = [fitted_size(s.width, s.height, slot_w, slot_h) for s, (_, _, slot_w, slot_h)
                 in zip((first, second), pair_slots)]
        placements[layout] = (canvas_h * canvas_w - sum(w * h for w, h in sizes), sizes)
    layout = "stacked" if placements["stacked"][0] <= placements["side"][0] else "side"
    canvas = np.zeros((canvas_h, canvas_w, 3), dtype=np.uint8)
    boxes = [_place(canvas, sample, top, left, w, h)
             for sample, (top, left, _, _), (w, h) in zip((first, second), slots[layout], placements[layout][1])]
    return Sample(image=canvas, boxes=np.concatenate(boxes).astype(np.float32, copy=False),
                  labels=np.concatenate([first.labels, second.labels]))


class Stitch:
    """The original's Stitch batch transform (original-spec §6; ``INPUT.STITCH``).

    ``prob`` < 1: with probability ``prob`` one pair is stitched. ``prob`` >= 1: always, ``round(prob)`` pairs.
    Pairs come from a random permutation of the batch (consecutive entries), at most B // 2 of them; a batch of one
    image is returned unchanged. The composite has the canvas size (the batch's padded size), which becomes its
    image size (the original kept image i's old size; od2 records the true extent so clipping and evaluation of the
    stitched image see all of it).
    """

    def __init__(self, prob: float) -> None:
        if prob < 0:
            raise ValueError(f"Stitch probability must be >= 0, got {prob}")
        self.prob = float(prob)

    @property
    def num_pairs(self) -> int:
        return 1 if self.prob < 1 else int(round(self.prob))

    def __call__(self, samples: Sequence[Sample], canvas_hw: tuple[int, int], rng: np.random.Generator) -> list[Sample]:
        samples = list(samples)
        if len(samples) < 2 or self.prob <= 0:
            return samples
        # Always draw both, so the stream does not depend on whether this batch stitches.
        fire = rng.random() < self.prob
        order = rng.permutation(len(samples))
        if not fire:
            return samples
        for k in range(min(self.num_pairs, len(samples) // 2)):
            i, j = int(order[2 * k]), int(order[2 * k + 1])
            samples[i] = stitch_pair(samples[i], samples[j], canvas_hw)
        return samples

    def __repr__(self) -> str:
        return f"Stitch(prob={self.prob})"


def mosaic_2x2(samples: Sequence[Sample]) -> Sample:
    """Tile four samples 2x2 (Stitcher, k = 4): [[0, 1], [2, 3]], with no resizing.

    The left column is as wide as the wider of samples 0 and 2, the top row as tall as the taller of 0 and 1; each
    sample sits at its cell's top-left corner and uncovered pixels are zero. Boxes are offset by their cell's corner.
    Output [H, W, 3] with H = max(h0, h1) + max(h2, h3) and W = max(w0, w2) + max(w1, w3).
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic_2x2 needs 4 samples, got {len(samples)}")
    s0, s1, s2, s3 = samples
    top_h, bottom_h = max(s0.height, s1.height), max(s2.height, s3.height)
    left_w, right_w = max(s0.width, s2.width), max(s1.width, s3.width)
    canvas = np.zeros((top_h + bottom_h, left_w + right_w, 3), dtype=np.uint8)
    corners = ((0, 0), (0, left_w), (top_h, 0), (top_h, left_w))
    boxes = []
    for sample, (top, left) in zip(samples, corners):
        canvas[top:top + sample.height, left:left + sample.width] = sample.image
        boxes.append(sample.boxes + np.array([left, top, left, top], dtype=np.float32))
    return Sample(image=canvas, boxes=np.concatenate(boxes).astype(np.float32, copy=False),
                  labels=np.concatenate([s.labels for s in samples]))

