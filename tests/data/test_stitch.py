"""Stitch (the original's two-image composite, original-spec §6) and the Stitcher 2x2 mosaic: boxes follow their
pixels in every layout (rendered rectangles), the layout rule, the firing rate, and the loader integration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from test_loader import batch_fingerprint, make_records, mixed_sizes
from test_transforms import colour_bbox, iou

from od2.data.loader import TrainCollate, build_train_loader
from od2.data.stitch import Stitch, fitted_size, mosaic_2x2, stitch_pair
from od2.data.transforms import Sample

# Pure colours (each channel 0 or 255) so colour_bbox can find them after bilinear resizing.
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255],
                    [255, 255, 255], [255, 128, 0]], dtype=np.uint8)[:7]


def drawn(height: int, width: int, labels: list[int]) -> Sample:
    """Black image with one filled rectangle per label (colour PALETTE[label]), laid out left to right."""
    n = len(labels)
    boxes = np.array([[width * (k + 0.15) / n, height * (0.15 + 0.2 * (k % 2)), width * (k + 0.85) / n,
                       height * (0.6 + 0.2 * (k % 2))] for k in range(n)]).round().astype(np.float32)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels):
        image[y1:y2, x1:x2] = PALETTE[label]
    return Sample(image=image, boxes=boxes.reshape(-1, 4), labels=np.array(labels, dtype=np.int64))


def assert_boxes_follow_pixels(sample: Sample) -> None:
    assert len(sample.boxes) == len(sample.labels)
    for box, label in zip(sample.boxes, sample.labels):
        assert iou(box, colour_bbox(sample.image, PALETTE[label])) > 0.9, (label, box)


def uncovered(canvas_hw, sizes) -> int:
    return canvas_hw[0] * canvas_hw[1] - sum(w * h for w, h in sizes)


@pytest.mark.parametrize(
    ("first_hw", "second_hw", "canvas_hw", "layout"),
    [
        ((100, 200), (120, 180), (256, 224), "stacked"),  # two landscape images: one above the other
        ((200, 100), (180, 120), (224, 256), "side"),  # two portrait images: side by side
        ((100, 200), (200, 100), (224, 224), None),  # mixed: whichever wastes less
        ((75, 181), (128, 128), (192, 256), None),  # odd sizes, canvas of the batch's padded size
    ],
)
def test_stitch_pair_moves_boxes_with_pixels(first_hw, second_hw, canvas_hw, layout):
    first, second = drawn(*first_hw, [0, 1, 2]), drawn(*second_hw, [3, 4, 5])
    out = stitch_pair(first, second, canvas_hw)
    assert out.image.shape == (*canvas_hw, 3) and out.image.dtype == np.uint8
    assert out.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert_boxes_follow_pixels(out)
    h, w = canvas_hw
    # The layout rule: stacked iff its uncovered area is not larger than side by side's.
    stacked = [fitted_size(s.width, s.height, w, slot) for s, slot in ((first, h // 2), (second, h - h // 2))]
    side = [fitted_size(s.width, s.height, slot, h) for s, slot in ((first, w // 2), (second, w - w // 2))]
    chosen = "stacked" if uncovered(canvas_hw, stacked) <= uncovered(canvas_hw, side) else "side"
    assert layout in (None, chosen)
    second_boxes = out.boxes[3:]
    if chosen == "stacked":  # the second image's boxes are in the bottom slot, the first's in the top one
        assert (second_boxes[:, 1] >= h // 2).all() and (out.boxes[:3, 3] <= h // 2).all()
        covered = stacked
    else:
        assert (second_boxes[:, 0] >= w // 2).all() and (out.boxes[:3, 2] <= w // 2).all()
        covered = side
    # Each image touches its slot's width or height, and nothing outside the fitted images is painted.
    assert (out.image.any(-1).sum()) <= sum(fw * fh for fw, fh in covered)


def test_fitted_size_keeps_aspect_and_touches_the_slot():
    assert fitted_size(200, 100, 224, 128) == (224, 112)
    assert fitted_size(100, 200, 112, 256) == (112, 224)
    assert fitted_size(300, 30, 50, 50) == (50, 5)
    assert fitted_size(640, 480, 320, 640) == (320, 240)


def test_mosaic_2x2_moves_boxes_with_pixels():
    parts = [drawn(60, 80, [0]), drawn(50, 90, [1, 2]), drawn(70, 64, [3]), drawn(40, 40, [4, 5])]
    out = mosaic_2x2(parts)
    assert out.image.shape == (60 + 70, 80 + 90, 3)
    assert out.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert_boxes_follow_pixels(out)
    with pytest.raises(ValueError, match="4 samples"):
        mosaic_2x2(parts[:3])


def test_stitch_fires_at_its_rate_and_pairs_as_configured():
    samples = [drawn(40, 60, [k]) for k in range(4)]
    rng = np.random.default_rng(0)
    draws = 3000
    fired = sum(any(a is not b for a, b in zip(samples, Stitch(0.5)(samples, (64, 64), rng))) for _ in range(draws))
    # Binomial(3000, 0.5): sd 27; allow 4 sd.
    assert abs(fired - draws / 2) < 4 * np.sqrt(draws * 0.25), fired
    for prob, batch, expect in ((2.0, 4, 2), (2.0, 3, 1), (3.0, 4, 2), (1.0, 5, 1)):
        inputs = samples[:batch] + [drawn(40, 60, [6])] * (batch - 4)
        out = Stitch(prob)(inputs, (64, 64), rng)
        changed = [o for o, s in zip(out, inputs) if o is not s]
        assert len(changed) == expect, (prob, batch)
        assert all(len(c.labels) >= 2 for c in changed)  # composites carry both images' boxes
    assert Stitch(0.0)(samples, (64, 64), rng) == samples
    assert Stitch(1.0)(samples[:1], (64, 64), rng) == samples[:1]
    with pytest.raises(ValueError):
        Stitch(-0.1)


def test_train_collate_stitches_on_the_padded_canvas():
    items = []
    for k, (h, w) in enumerate([(40, 60), (50, 30), (36, 64)]):
        s = drawn(h, w, [k])
        items.append({"image": torch.from_numpy(s.image).permute(2, 0, 1), "boxes": torch.from_numpy(s.boxes),
                      "labels": torch.from_numpy(s.labels), "image_id": k, "orig_size": (h, w),
                      "image_size": (h, w), "draw": 7})
    batch = TrainCollate(size_divisibility=32, seed=0, stitch=Stitch(1.0))(items)
    assert batch["images"].shape == (3, 3, 64, 64)
    sizes = batch["image_sizes"].tolist()
    composite = [i for i, b in enumerate(batch["boxes"]) if len(b) == 2]
    assert len(composite) == 1 and sizes[composite[0]] == [64, 64]  # the composite spans the whole canvas
    for i in range(3):
        image = batch["images"][i].permute(1, 2, 0).numpy()
        h, w = sizes[i]
        for box, label in zip(batch["boxes"][i].numpy(), batch["labels"][i].tolist()):
            assert box[2] <= w and box[3] <= h
            assert iou(box, colour_bbox(image, PALETTE[label])) > 0.9


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return make_records(tmp_path_factory.mktemp("stitch"), mixed_sizes(12), fmt="png")


def fingerprints(records, num_batches, **kwargs):
    args = dict(min_sizes=(24, 32), max_size=64, flip_prob=0.5, batch_size=4, num_workers=0, seed=0)
    loader = build_train_loader(records, **{**args, **kwargs})
    return [batch_fingerprint(b) for b in itertools.islice(loader, num_batches)]


@pytest.mark.parametrize("kwargs", [dict(stitch_prob=0.5), dict(mosaic=True), dict(stitch_prob=1.0,
                                                                                   dataprocess="AA")])
def test_batch_augmentation_runs_in_workers_deterministically(records, kwargs):
    serial = fingerprints(records, 6, **kwargs)
    assert fingerprints(records, 6, num_workers=2, **kwargs) == serial
    assert fingerprints(records, 6, seed=1, **kwargs) != serial
    assert fingerprints(records, 6, **kwargs) != fingerprints(records, 6)  # the augmentation changed something


def test_mosaic_loader_yields_a_quarter_of_its_images_as_mosaics(records):
    loader = build_train_loader(records, min_sizes=(16,), max_size=32, flip_prob=0.0, batch_size=8, num_workers=0,
                                seed=0, mosaic=True)
    batch = next(iter(loader))
    assert batch["images"].shape[0] == 2
    # 4 images x 2 boxes each, less the crowd boxes (every third record has one)
    assert all(4 <= len(b) <= 8 for b in batch["boxes"]) and sum(map(len, batch["boxes"])) < 16
    assert (batch["image_sizes"].min(dim=1).values >= 32).all()  # two 16-pixel short sides per side


def test_stitch_with_one_image_per_batch_warns(records, caplog):
    with caplog.at_level("WARNING", logger="od2.data.loader"):
        build_train_loader(records, min_sizes=(16,), max_size=32, flip_prob=0.0, batch_size=1, num_workers=0, seed=0,
                           stitch_prob=0.5)
    assert "no effect" in caplog.text
