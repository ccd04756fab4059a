"""Tests of od2.data.transforms: geometry checked against where the pixels actually went, and closed-form sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from od2.data.transforms import (
    MIN_BOX_SIDE,
    Compose,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    Sample,
    clip_and_filter,
    resize_image,
    resized_hw,
)

# Pure colours, so a pixel belongs to a rectangle iff its own channel is the brighter half and the others are dark.
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def rectangles_sample(height: int, width: int) -> Sample:
    """Black image with three filled, separated rectangles; their boxes are exact pixel-edge XYXY."""
    boxes = np.array(
        [
            [0.10 * width, 0.10 * height, 0.45 * width, 0.40 * height],
            [0.55 * width, 0.15 * height, 0.95 * width, 0.60 * height],
            [0.20 * width, 0.55 * height, 0.50 * width, 1.00 * height],  # touches the bottom edge
        ]
    ).round().astype(np.float32)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), COLOURS):
        image[y1:y2, x1:x2] = colour
    return Sample(image=image, boxes=boxes, labels=np.arange(3, dtype=np.int64))


def colour_bbox(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Tight pixel-edge XYXY box of the pixels closer to ``colour`` than to black."""
    bright = colour > 0
    mask = (image[..., bright] > 127).all(-1) & (image[..., ~bright] < 128).all(-1)
    ys, xs = np.nonzero(mask)
    assert len(xs), f"colour {colour} vanished"
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def assert_boxes_follow_pixels(sample: Sample) -> None:
    assert sample.boxes.dtype == np.float32 and sample.labels.dtype == np.int64
    for box, label in zip(sample.boxes, sample.labels):
        found = colour_bbox(sample.image, COLOURS[label])
        assert iou(box, found) > 0.9, (box, found)


@pytest.mark.parametrize(
    ("height", "width", "short", "max_size"),
    [
        (100, 150, 200, 1000),  # upscale x2
        (240, 320, 96, 1000),  # downscale x0.4
        (100, 300, 200, 400),  # long-side cap binds: scale 4/3, not 2
        (300, 200, 150, 1000),  # portrait
        (123, 171, 97, 1000),  # non-integer scale
    ],
)
def test_resize_moves_boxes_with_pixels(height: int, width: int, short: int, max_size: int) -> None:
    sample = rectangles_sample(height, width)
    out = Compose([ResizeShortestEdge((short,), max_size)])(sample, np.random.default_rng(0))
    assert out.image.shape == (*resized_hw(height, width, short, max_size), 3)
    assert out.image.dtype == np.uint8
    assert_boxes_follow_pixels(out)


@pytest.mark.parametrize(("height", "width"), [(90, 140), (140, 90)])
def test_flip_moves_boxes_with_pixels(height: int, width: int) -> None:
    sample = rectangles_sample(height, width)
    out = Compose([RandomHorizontalFlip(prob=1.0)])(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image, sample.image[:, ::-1])
    assert_boxes_follow_pixels(out)
    expected = sample.boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [width, 0, width, 0]
    np.testing.assert_allclose(out.boxes, expected)


def test_resize_then_flip_moves_boxes_with_pixels() -> None:
    sample = rectangles_sample(150, 200)
    transform = Compose([ResizeShortestEdge((80, 120, 300), 1000), RandomHorizontalFlip(0.5)])
    for seed in range(6):
        assert_boxes_follow_pixels(transform(sample, np.random.default_rng(seed)))


@pytest.mark.parametrize(
    ("height", "width", "short", "max_size", "expected"),
    [
        (480, 640, 600, 1000, (600, 800)),
        (480, 640, 800, 1000, (750, 1000)),  # cap binds
        (480, 640, 640, 800, (600, 800)),  # the original would force 640x800 here
        (427, 640, 800, 1333, (800, 1199)),
        (640, 427, 800, 1333, (1199, 800)),
        (1000, 1000, 512, 800, (512, 512)),
        (333, 500, 576, 1333, (576, 865)),  # 864.86 rounds up
        (100, 2000, 600, 1333, (67, 1333)),  # 66.65 rounds up, cap binds
        (375, 500, 576, 800, (576, 768)),
        (480, 641, 240, 1333, (240, 321)),  # 320.5 rounds half up, not to even
    ],
)
def test_resized_hw_matches_closed_form(height, width, short, max_size, expected) -> None:
    scale = min(short / min(height, width), max_size / max(height, width))
    assert expected == (int(np.floor(height * scale + 0.5)), int(np.floor(width * scale + 0.5)))
    assert resized_hw(height, width, short, max_size) == expected
    image = np.zeros((height, width, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, width, height]], dtype=np.float32)
    out = ResizeShortestEdge((short,), max_size)(Sample(image, boxes, np.zeros(1, np.int64)), np.random.default_rng(0))
    assert out.image.shape[:2] == expected
    np.testing.assert_allclose(out.boxes, [[0, 0, expected[1], expected[0]]], rtol=1e-6)


def test_resize_image_matches_pil_bilinear() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    image = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((160, 120)))
    for h, w in [(60, 80), (200, 270)]:
        expected = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)).astype(int)
        assert np.abs(resize_image(image, h, w).astype(int) - expected).max() <= 1


def test_resize_accepts_views_of_chw_memory_and_flipped_views() -> None:
    chw = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    view = chw.permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(resize_image(view, 40, 60), view)
    flipped = np.ascontiguousarray(view)[:, ::-1]
    np.testing.assert_array_equal(resize_image(flipped, 20, 30), resize_image(np.ascontiguousarray(flipped), 20, 30))


def test_sample_styles() -> None:
    rng = np.random.default_rng(0)
    choice = ResizeShortestEdge((512, 544, 576), 1333)
    assert {choice.sample_short_edge(rng) for _ in range(300)} == {512, 544, 576}
    ranged = ResizeShortestEdge((10, 13), 1333, sample_style="range")
    assert {ranged.sample_short_edge(rng) for _ in range(300)} == {10, 11, 12, 13}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(short_edge_lengths=(), max_size=10),
        dict(short_edge_lengths=(0,), max_size=10),
        dict(short_edge_lengths=(5,), max_size=0),
        dict(short_edge_lengths=(5,), max_size=10, sample_style="uniform"),
        dict(short_edge_lengths=(5, 6, 7), max_size=10, sample_style="range"),
    ],
)
def test_resize_rejects_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        ResizeShortestEdge(**kwargs)


def test_clip_and_filter_clips_drops_and_never_inverts() -> None:
    image = np.zeros((50, 100, 3), dtype=np.uint8)
    boxes = np.array(
        [
            [-10, 5, 50, 40],  # partly outside: clipped
            [90, 45, 130, 70],  # partly outside, two sides: clipped
            [200, 10, 250, 40],  # fully outside: dropped
            [10, 10, 10, 30],  # zero width: dropped
            [50, 10, 20, 30],  # inverted: dropped
            [10, 10, 10 + MIN_BOX_SIDE / 2, 30],  # thinner than MIN_BOX_SIDE: dropped
            [np.nan, 0, 5, 5],  # NaN: dropped
            [0, 0, 100, 50],  # the whole image: kept as is
        ],
        dtype=np.float32,
    )
    out = clip_and_filter(Sample(image, boxes, np.arange(8, dtype=np.int64)))
    np.testing.assert_array_equal(out.labels, [0, 1, 7])
    np.testing.assert_allclose(out.boxes, [[0, 5, 50, 40], [90, 45, 100, 50], [0, 0, 100, 50]])
    assert out.boxes.dtype == np.float32


def test_compose_clips_after_each_transform_and_keeps_labels_aligned() -> None:
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    boxes = np.array([[-20, -5, 30, 20], [70, 30, 90, 60], [100, 0, 120, 10], [5, 5, 5, 5]], dtype=np.float32)
    sample = Sample(image, boxes, np.array([3, 4, 5, 6], dtype=np.int64))
    out = Compose([ResizeShortestEdge((20,), 1000), RandomHorizontalFlip(1.0)])(sample, np.random.default_rng(0))
    assert out.image.shape == (20, 40, 3)
    np.testing.assert_array_equal(out.labels, [3, 4])
    # Resize by 0.5 and clip: [0, 0, 15, 10], [35, 15, 40, 20]; then flip in a width of 40.
    np.testing.assert_allclose(out.boxes, [[25, 0, 40, 10], [0, 15, 5, 20]])
    assert (out.boxes[:, 2:] > out.boxes[:, :2]).all()


def test_transforms_handle_empty_boxes_and_do_not_write_inputs() -> None:
    sample = rectangles_sample(60, 80)
    empty = Sample(sample.image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    transform = Compose([ResizeShortestEdge((30,), 1000), RandomHorizontalFlip(1.0)])
    out = transform(empty, np.random.default_rng(0))
    assert out.boxes.shape == (0, 4) and out.boxes.dtype == np.float32 and out.labels.shape == (0,)
    before = (sample.image.copy(), sample.boxes.copy(), sample.labels.copy())
    transform(sample, np.random.default_rng(0))
    Compose([RandomHorizontalFlip(1.0)])(sample, np.random.default_rng(0))
    for kept, now in zip(before, (sample.image, sample.boxes, sample.labels)):
        np.testing.assert_array_equal(kept, now)


def test_flip_rate() -> None:
    image = np.zeros((4, 10, 3), dtype=np.uint8)
    sample = Sample(image, np.array([[0, 0, 2, 4]], np.float32), np.zeros(1, np.int64))
    flip = RandomHorizontalFlip(0.5)
    # One generator per draw, seeded as DetectionDataset seeds augmentation.
    flipped = [flip(sample, np.random.default_rng([7, 1, n])).boxes[0, 0] == 8 for n in range(2000)]
    assert abs(np.mean(flipped) - 0.5) <= 0.04
    assert all(RandomHorizontalFlip(1.0)(sample, np.random.default_rng(n)).boxes[0, 0] == 8 for n in range(20))
    assert all(RandomHorizontalFlip(0.0)(sample, np.random.default_rng(n)) is sample for n in range(20))
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)
