"""Tests of od2.data.waa: the WAA policy's ops on rendered rectangles, their rates, and the branch choice.

Statistical tests use fixed seeds and accept a count within 4 binomial standard deviations of its expectation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from test_autoaugment import (
    COLOURS,
    assert_boxes_follow_colours,
    assert_deterministic_and_read_only,
    read_only,
    scene,
)

from od2.data import autoaugment as aa
from od2.data.transforms import Compose, Sample
from od2.data.waa import (
    RandomRotateAnyAngle,
    RemoveSmallBoxes,
    WAutoAugment,
    WColor,
    WRandomCutout,
    WRandomEqualize,
    WRandomTranslate,
    WShear,
)


def within_4_sigma(count: int, trials: int, p: float) -> bool:
    return abs(count - trials * p) <= 4 * math.sqrt(trials * p * (1 - p))


def tiny(seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 256, (16, 20, 3), dtype=np.uint8)  # no zeros, so a 0-filled cutout is visible
    boxes = np.array([[2, 3, 9, 12], [10, 1, 18, 7]], dtype=np.float32)
    return Sample(image=image, boxes=boxes, labels=np.array([0, 1], dtype=np.int64))


# ---------------------------------------------------------------------------------------------------------------------
# Geometry on rendered rectangles
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("horizontal, pixels", [(True, 60), (False, 40)])
def test_translate_grows_the_canvas(horizontal: bool, pixels: int) -> None:
    sample = scene()
    out = Compose([WRandomTranslate(pixels, prob=1.0, horizontal=horizontal)])(sample, np.random.default_rng(0))
    if horizontal:
        assert out.image.shape == (240, 320 + pixels, 3)
        assert (out.image[:, :pixels] == 127).all()
        np.testing.assert_array_equal(out.image[:, pixels:], sample.image)
        np.testing.assert_array_equal(out.boxes, sample.boxes + [pixels, 0, pixels, 0])
    else:
        assert out.image.shape == (240 + pixels, 320, 3)
        assert (out.image[:pixels] == 127).all()
        np.testing.assert_array_equal(out.image[pixels:], sample.image)
        np.testing.assert_array_equal(out.boxes, sample.boxes + [0, pixels, 0, pixels])
    assert_boxes_follow_colours(out, len(COLOURS))


def test_shear_moves_boxes_with_pixels() -> None:
    sample = scene()
    out = Compose([WShear()])(sample, np.random.default_rng(0))
    assert out.image.shape == sample.image.shape
    assert_boxes_follow_colours(out, len(COLOURS))
    # Fixed +0.06 vertical shear: y' = y - 0.06 x, so the right-hand box rises by 0.06 * its x.
    np.testing.assert_allclose(out.boxes[1], [170, 40 - 0.06 * 250, 250, 120 - 0.06 * 170], atol=1e-4)
    assert (out.image[-1, -1] == 128).all()  # uncovered bottom-right corner filled with 128


def test_shear_box_leaving_the_image_is_dropped() -> None:
    """A strong shear lifts the top-right box wholly above the image: Compose drops it, the rest stay valid."""
    boxes = np.array([[40, 150, 100, 200], [250, 0, 300, 20]], dtype=np.float32)
    sample = scene(boxes=boxes)
    out = Compose([WShear(level=0.5)])(sample, np.random.default_rng(0))
    assert out.labels.tolist() == [0]
    assert_boxes_follow_colours(out, 2)


def test_rotation_moves_boxes_with_pixels() -> None:
    """Boxes are the enclosing boxes of the rotated corners (od2's fix of the original, which kept them unchanged).

    Tolerance: IoU > 0.9 with the tight box of each rotated colour region (NEAREST costs about 1 px per side); a
    rectangle cut by the image border need only lie inside its clipped box.
    """
    sample = scene()
    op = Compose([RandomRotateAnyAngle(prob=1.0)])
    moved = 0
    for seed in range(8):
        out = op(sample, np.random.default_rng(seed))
        assert out.image.shape == sample.image.shape
        assert_boxes_follow_colours(out, len(COLOURS))
        assert (out.image[0, 0] == 0).all() or (out.image[-1, -1] == 0).all()  # zero fill at a corner
        moved += int(not np.allclose(out.boxes[:3], sample.boxes[:3]))
    assert moved == 8


def test_rotation_angle_is_uniform_in_range() -> None:
    """The angle, read back from the first box's enclosing box, spans about +-30 degrees."""
    square = np.array([[30, 20, 50, 40]], dtype=np.float32)  # centred: enclosing side 20 (|cos| + |sin|)
    sample = scene(60, 80, boxes=square)
    magnitudes = []
    for seed in range(200):
        out = RandomRotateAnyAngle(prob=1.0)(sample, np.random.default_rng(seed))
        side = float(out.boxes[0, 2] - out.boxes[0, 0]) / 20.0  # = cos a + sin |a|
        magnitudes.append(math.degrees(math.asin(min(1.0, side / math.sqrt(2)))) - 45.0)
    magnitudes = np.abs(magnitudes)
    assert magnitudes.max() <= 30.0 + 1e-3 and magnitudes.max() > 27.0 and magnitudes.min() < 3.0


def test_cutout_is_a_16_pixel_square_of_zeros() -> None:
    sample = scene()
    full = 0
    for seed in range(10):
        out = WRandomCutout(prob=1.0)(sample, np.random.default_rng(seed))
        np.testing.assert_array_equal(out.boxes, sample.boxes)
        ys, xs = np.nonzero((out.image != sample.image).any(-1))
        assert (out.image[ys, xs] == 0).all()
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert h <= 16 and w <= 16 and len(ys) == h * w
        full += int(h == 16 and w == 16)
    assert full > 0


def test_color_and_equalize_match_pil() -> None:
    image = np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    sample = Sample(image=image, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    pil = Image.fromarray(image)
    coloured = WColor()(sample, np.random.default_rng(0)).image
    np.testing.assert_array_equal(coloured, aa.color(image, 1.18))
    assert np.abs(coloured.astype(int) - np.asarray(ImageEnhance.Color(pil).enhance(1.18)).astype(int)).max() <= 1
    equalized = WRandomEqualize(prob=1.0)(sample, np.random.default_rng(0)).image
    np.testing.assert_array_equal(equalized, np.asarray(ImageOps.equalize(pil)))


def test_remove_small_boxes() -> None:
    boxes = np.array([[0, 0, 1, 1.9], [0, 0, 1, 2], [5, 5, 7, 6], [3, 3, 3.5, 3.5]], dtype=np.float32)
    sample = Sample(image=tiny().image, boxes=boxes, labels=np.arange(4, dtype=np.int64))
    out = RemoveSmallBoxes()(sample, np.random.default_rng(0))
    assert out.labels.tolist() == [1, 2]


# ---------------------------------------------------------------------------------------------------------------------
# Rates
# ---------------------------------------------------------------------------------------------------------------------


def test_branch_choice_is_uniform() -> None:
    augment, rng = WAutoAugment(), np.random.default_rng(0)
    counts = np.bincount([augment.sample_branch(rng) for _ in range(4000)], minlength=5)
    assert len(counts) == 5 and all(within_4_sigma(int(c), 4000, 0.2) for c in counts), counts


@pytest.mark.parametrize(
    "transform, prob",
    [
        (WRandomTranslate(60, horizontal=True), 0.6),
        (WRandomTranslate(40, horizontal=False), 0.6),
        (WRandomEqualize(), 0.8),
        (WRandomCutout(), 0.8),
        (RandomRotateAnyAngle(), 0.6),
    ],
)
def test_op_rates(transform, prob: float) -> None:
    """Each op fires at its p over 4000 draws (4 sigma); firing is seen as a changed image, shape or boxes."""
    sample, rng = tiny(), np.random.default_rng(11)
    fired = 0
    for _ in range(4000):
        out = transform(sample, rng)
        changed = out.image.shape != sample.image.shape or not np.array_equal(out.boxes, sample.boxes)
        fired += int(changed or not np.array_equal(out.image, sample.image))
    assert within_4_sigma(fired, 4000, prob), fired / 4000


def test_policy_end_to_end_rates() -> None:
    """Through the whole policy: width grows in branch 1 (0.2 * 0.6), height in branches 2 and 3 (2 * 0.2 * 0.6)."""
    augment, sample, rng = WAutoAugment(), tiny(), np.random.default_rng(5)
    wider = taller = 0
    for _ in range(4000):
        out = augment(sample, rng)
        wider += int(out.width == 20 + 60)
        taller += int(out.height == 16 + 40)
    assert within_4_sigma(wider, 4000, 0.12), wider
    assert within_4_sigma(taller, 4000, 0.24), taller


# ---------------------------------------------------------------------------------------------------------------------
# Determinism, read-only inputs, empty boxes, API
# ---------------------------------------------------------------------------------------------------------------------


def test_deterministic_and_never_writes_its_input() -> None:
    assert_deterministic_and_read_only(Compose([WAutoAugment()]), seeds=15)


@pytest.mark.parametrize("branch", range(5))
def test_every_branch_with_empty_boxes_and_read_only_input(branch: int) -> None:
    base = scene()
    empty = Sample(image=read_only(base).image, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    out = WAutoAugment(translate_prob=1.0, equalize_prob=1.0, cutout_prob=1.0, rotate_prob=1.0).apply_branch(
        branch, empty, np.random.default_rng(0)
    )
    assert out.boxes.shape == (0, 4) and out.boxes.dtype == np.float32
    assert out.labels.shape == (0,) and out.labels.dtype == np.int64
    np.testing.assert_array_equal(empty.image, base.image)
    if branch == 4:
        np.testing.assert_array_equal(out.image, base.image)


def test_constructor_and_repr() -> None:
    augment = WAutoAugment()
    text = repr(augment)
    for part in ["pixels=60", "pixels=40", "WRandomEqualize(prob=0.8)", "pad_size=8", "level=0.06", "max_angle=30.0"]:
        assert part in text, part
    assert "WColor(factor=1.18)" in text and "min_area=2.0" in text
    custom = WAutoAugment(translate_x_pixels=10, color_factor=1.5)
    assert custom.branches[0][0].pixels == 10 and custom.branches[3][1].factor == 1.5
    with pytest.raises(ValueError):
        WRandomTranslate(prob=1.5)
