"""Tests of od2.data.autoaugment: boxes checked against where rendered rectangles went, pixel ops against PIL.

Statistical tests use fixed seeds and accept a count within 4 binomial standard deviations of its expectation, so they
are deterministic and a correct implementation fails them with probability ~6e-5 per check before seeding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from test_transforms import iou

from od2.data import autoaugment as aa
from od2.data.autoaugment import AUTOAUGMENT_POLICIES, OPS, AutoAugment, apply_op
from od2.data.transforms import Compose, Sample

BACKGROUND = np.array([30, 60, 90], dtype=np.uint8)  # differs from every fill (128, 0) and every rectangle colour
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)
# Exact pixel-edge boxes of the rectangles on a 240 x 320 image; the last touches the right and bottom edges.
SCENE_BOXES = np.array([[40, 30, 110, 90], [170, 40, 250, 120], [60, 140, 140, 200], [270, 180, 320, 240]], np.float32)
GEOMETRIC_OPS = ["TranslateX_BBox", "TranslateY_BBox", "ShearX_BBox", "ShearY_BBox", "Rotate_BBox"]


def scene(height: int = 240, width: int = 320, boxes: np.ndarray = SCENE_BOXES) -> Sample:
    """Uniform background with filled rectangles of distinct colours; boxes[i] is exactly the rectangle of colour i."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), COLOURS):
        image[y1:y2, x1:x2] = colour
    return Sample(image=image, boxes=boxes.copy(), labels=np.arange(len(boxes), dtype=np.int64))


def colour_box(image: np.ndarray, colour: np.ndarray) -> np.ndarray | None:
    """Tight pixel-edge XYXY box of the pixels exactly equal to ``colour`` (None if there are none)."""
    ys, xs = np.nonzero((image == colour).all(-1))
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def assert_boxes_follow_colours(out: Sample, num_colours: int, min_iou: float = 0.9) -> None:
    """Every kept box matches its colour region; every dropped box's colour has (almost) vanished; none inverted."""
    assert out.boxes.dtype == np.float32 and out.labels.dtype == np.int64
    assert (out.boxes[:, 2:] >= out.boxes[:, :2]).all()
    assert (
        (out.boxes >= 0).all()
        and (out.boxes[:, [0, 2]] <= out.width).all()
        and (out.boxes[:, [1, 3]] <= out.height).all()
    )
    for box, label in zip(out.boxes, out.labels):
        found = colour_box(out.image, COLOURS[label])
        assert found is not None, f"colour {label} vanished but its box {box} was kept"
        # A rotated or sheared rectangle cut by the border has a visible part smaller than its clipped enclosing box;
        # then the box must contain what is visible.
        touches_border = found[0] == 0 or found[1] == 0 or found[2] == out.width or found[3] == out.height
        contains = (found[:2] >= box[:2] - 1).all() and (found[2:] <= box[2:] + 1).all()
        assert iou(box, found) > min_iou or (touches_border and contains), (label, box, found)
    for label in set(range(num_colours)) - set(out.labels.tolist()):
        found = colour_box(out.image, COLOURS[label])
        assert found is None or (found[2] - found[0]) * (found[3] - found[1]) <= 2, (label, found)


def read_only(sample: Sample) -> Sample:
    """The same sample as read-only, non-contiguous views (the image a channels-last view of a CHW buffer)."""
    chw = np.ascontiguousarray(sample.image.transpose(2, 0, 1))
    chw.flags.writeable = False
    boxes = sample.boxes.copy()
    boxes.flags.writeable = False
    labels = sample.labels.copy()
    labels.flags.writeable = False
    return Sample(image=chw.transpose(1, 2, 0), boxes=boxes, labels=labels)


def noise_sample(height: int = 48, width: int = 64, seed: int = 0, boxes: np.ndarray | None = None) -> Sample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if boxes is None:
        boxes = np.array([[4, 4, 20, 30], [30, 10, 60, 40]], dtype=np.float32)
    return Sample(image=image, boxes=boxes.astype(np.float32), labels=np.arange(len(boxes), dtype=np.int64))


class ForcedOp:
    """Transform applying one AutoAugment op with probability 1 at a fixed level."""

    def __init__(self, name: str, level: int) -> None:
        self.name, self.level = name, level

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return apply_op(self.name, sample, rng, 1.0, self.level)


# ---------------------------------------------------------------------------------------------------------------------
# Policies and API
# ---------------------------------------------------------------------------------------------------------------------


def test_policy_v0_matches_the_paper() -> None:
    assert AUTOAUGMENT_POLICIES["v0"] == [
        [("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)],
        [("TranslateY_Only_BBoxes", 0.2, 2), ("Cutout", 0.8, 8)],
        [("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)],
        [("ShearY_BBox", 1.0, 2), ("TranslateY_Only_BBoxes", 0.6, 6)],
        [("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)],
    ]


@pytest.mark.parametrize(
    "policy, num_subpolicies, ops_per_subpolicy", [("v0", 5, 2), ("v1", 20, 2), ("v2", 15, 3), ("v3", 15, 2)]
)
def test_policies_are_well_formed(policy: str, num_subpolicies: int, ops_per_subpolicy: int) -> None:
    subpolicies = AUTOAUGMENT_POLICIES[policy]
    assert len(subpolicies) == num_subpolicies
    for subpolicy in subpolicies:
        assert 2 <= len(subpolicy) <= ops_per_subpolicy
        for name, prob, level in subpolicy:
            assert name in OPS and 0.0 <= prob <= 1.0 and isinstance(level, int) and 0 <= level <= 10


def test_unknown_policy_and_op_are_rejected() -> None:
    with pytest.raises(ValueError, match="v0.*v1.*v2.*v3"):
        AutoAugment("v9")
    with pytest.raises(ValueError, match="unknown AutoAugment op"):
        apply_op("Invert", noise_sample(), np.random.default_rng(0), 1.0, 5)
    assert repr(AutoAugment("v2")) == "AutoAugment(policy='v2', subpolicies=15)"


# ---------------------------------------------------------------------------------------------------------------------
# Whole-image geometric ops: boxes follow the rendered rectangles
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, level",
    [
        ("TranslateX_BBox", 2),  # 50 px
        ("TranslateX_BBox", 4),  # 100 px: some boxes leave the image
        ("TranslateY_BBox", 2),
        ("TranslateY_BBox", 4),
        ("ShearX_BBox", 5),  # 0.15
        ("ShearX_BBox", 10),  # 0.3
        ("ShearY_BBox", 10),
        ("Rotate_BBox", 5),  # 15 degrees
        ("Rotate_BBox", 10),  # 30 degrees
    ],
)
def test_geometric_op_moves_boxes_with_pixels(name: str, level: int) -> None:
    """Image and boxes transformed together, both signs; IoU with each colour's region > 0.9 after Compose's clipping.

    For rotation the colour region is the rotated rectangle, whose tight box is the enclosing box of the rotated
    corners up to NEAREST sampling (about 1 px per side), so the same 0.9 tolerance holds for these 50-80 px boxes;
    a rotated or sheared rectangle cut by the image border need only lie inside its box (within 1 px).
    """
    sample = scene()
    op = Compose([ForcedOp(name, level)])
    outcomes = set()
    for seed in range(6):
        out = op(sample, np.random.default_rng(seed))
        assert out.image.shape == sample.image.shape and out.image.dtype == np.uint8
        assert_boxes_follow_colours(out, len(COLOURS))
        assert len(out.boxes) >= 1
        outcomes.add(tuple(out.boxes.round(2).ravel()) + tuple(out.labels))
    # The sign is the op's only randomness, so two distinct outcomes mean both signs were drawn and checked.
    assert len(outcomes) == 2


def test_translate_and_shear_directions() -> None:
    """The exact maps: translate moves content by the signed pixels; shear_x samples out(x, y) = in(x + level y, y)."""
    sample = scene()
    for seed in range(8):
        out = apply_op("TranslateX_BBox", sample, np.random.default_rng(seed), 1.0, 2)
        dx = float(out.boxes[0, 0] - sample.boxes[0, 0])
        assert abs(dx) == 50 and (out.boxes - sample.boxes)[:, [1, 3]].max() == 0
        shifted = np.full_like(sample.image, 128)
        if dx > 0:
            shifted[:, 50:] = sample.image[:, :-50]
        else:
            shifted[:, :-50] = sample.image[:, 50:]
        np.testing.assert_array_equal(out.image, shifted)
    image = noise_sample(30, 40).image
    sheared = aa.shear_x(image, 0.25)
    for y, x in [(0, 0), (10, 5), (29, 12), (17, 30)]:
        src_x = math.floor(x + 0.5 + 0.25 * (y + 0.5))
        expected = image[y, src_x] if src_x < 40 else np.full(3, 128)
        np.testing.assert_array_equal(sheared[y, x], expected)
    np.testing.assert_allclose(
        aa.transform_boxes(np.array([[4, 8, 10, 20]], np.float32), aa.shear_matrix(0.25, True)),
        [[4 - 5, 8, 10 - 2, 20]],
    )


def test_rotation_is_about_the_centre() -> None:
    """A 90-degree rotation of a square image about its centre is an exact pixel permutation (counter-clockwise)."""
    image = noise_sample(32, 32).image
    np.testing.assert_array_equal(aa.rotate(image, 90.0), np.rot90(image))
    box = aa.transform_boxes(np.array([[0, 0, 8, 4]], np.float32), aa.rotation_matrix(90.0, 32, 32))
    np.testing.assert_allclose(box, [[0, 24, 4, 32]], atol=1e-4)


def test_boxes_leaving_the_image_are_clipped_or_dropped_never_inverted() -> None:
    sample = scene()
    kept_counts = set()
    for name, level in [("TranslateX_BBox", 10), ("TranslateY_BBox", 10), ("ShearX_BBox", 10), ("Rotate_BBox", 10)]:
        for seed in range(4):
            out = Compose([ForcedOp(name, level)])(sample, np.random.default_rng(seed))
            assert_boxes_follow_colours(out, len(COLOURS))
            kept_counts.add(len(out.boxes))
    assert min(kept_counts) < len(SCENE_BOXES), "a 250 px translation of a 320 px image must drop boxes"


# ---------------------------------------------------------------------------------------------------------------------
# Cutout and BBox_Cutout
# ---------------------------------------------------------------------------------------------------------------------


def region_of(image: np.ndarray, value: int) -> np.ndarray | None:
    return colour_box(image, np.full(3, value, dtype=np.uint8))


def test_cutout_is_a_clipped_square_of_128_and_keeps_boxes() -> None:
    sample = scene()
    sides = set()
    for seed in range(12):
        out = apply_op("Cutout", sample, np.random.default_rng(seed), 1.0, 2)  # pad 20 -> 40 x 40 square
        np.testing.assert_array_equal(out.boxes, sample.boxes)
        found = region_of(out.image, 128)
        assert found is not None
        w, h = found[2] - found[0], found[3] - found[1]
        assert w <= 40 and h <= 40 and (w == 40 or found[0] == 0 or found[2] == 320)
        assert h == 40 or found[1] == 0 or found[3] == 240
        changed = (out.image != sample.image).any(-1)
        assert changed.sum() == ((out.image == 128).all(-1)).sum()
        sides.add((w, h))
    assert (40, 40) in sides


def test_bbox_cutout_lies_in_a_box_and_scales_with_it() -> None:
    sample = scene()
    for seed in range(12):
        out = apply_op("BBox_Cutout", sample, np.random.default_rng(seed), 1.0, 10)  # pad fraction 0.75
        np.testing.assert_array_equal(out.boxes, sample.boxes)
        found = region_of(out.image, 128)
        assert found is not None
        matches = []
        for x1, y1, x2, y2 in sample.boxes:
            pad_x, pad_y = int(0.75 * (x2 - x1) / 2), int(0.75 * (y2 - y1) / 2)
            fits_x = found[2] - found[0] == 2 * pad_x or found[0] == 0 or found[2] == 320
            fits_y = found[3] - found[1] == 2 * pad_y or found[1] == 0 or found[3] == 240
            centre_inside = x1 - pad_x <= found[0] < x2 and y1 - pad_y <= found[1] < y2
            matches.append(fits_x and fits_y and centre_inside)
        assert any(matches), found


# ---------------------------------------------------------------------------------------------------------------------
# *_Only_BBoxes ops
# ---------------------------------------------------------------------------------------------------------------------

ONLY_BOXES = np.array([[2, 2, 14, 30], [18, 4, 30, 40], [34, 6, 50, 26], [54, 10, 62, 46]], dtype=np.float32)


def outside_boxes_mask(height: int, width: int, boxes: np.ndarray) -> np.ndarray:
    mask = np.ones((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes.astype(int):
        mask[y1:y2, x1:x2] = False
    return mask


@pytest.mark.parametrize("name", sorted(aa.BBOX_ONLY_OPS))
def test_only_bboxes_ops_touch_only_box_pixels(name: str) -> None:
    sample = noise_sample(boxes=ONLY_BOXES)
    outside = outside_boxes_mask(48, 64, ONLY_BOXES)
    fired = 0
    for seed in range(6):
        out = apply_op(name, sample, np.random.default_rng(seed), 1.0, 8)
        np.testing.assert_array_equal(out.boxes, sample.boxes)
        np.testing.assert_array_equal(out.labels, sample.labels)
        np.testing.assert_array_equal(out.image[outside], sample.image[outside])
        fired += int((out.image != sample.image).any())
    assert fired > 0


@pytest.mark.parametrize("level, pixels", [(2, 24), (6, 72)])
def test_translate_y_only_bboxes_moves_box_content(level: int, pixels: int) -> None:
    """Each fired box's content moves by +-pixels inside the box, the uncovered part filled with 128."""
    sample = noise_sample(boxes=ONLY_BOXES)
    seen = set()
    for seed in range(10):
        out = apply_op("TranslateY_Only_BBoxes", sample, np.random.default_rng(seed), 1.0, level)
        for x1, y1, x2, y2 in ONLY_BOXES.astype(int):
            before, after = sample.image[y1:y2, x1:x2], out.image[y1:y2, x1:x2]
            if np.array_equal(before, after):
                continue
            up, down = np.full_like(before, 128), np.full_like(before, 128)
            if pixels < before.shape[0]:
                down[pixels:] = before[:-pixels]
                up[:-pixels] = before[pixels:]
            if np.array_equal(after, down):
                seen.add("down")
            elif np.array_equal(after, up):
                seen.add("up")
            else:
                raise AssertionError(f"box {(x1, y1, x2, y2)} content not shifted by {pixels} px")
    assert seen, "no box fired over 10 seeds"


def test_only_bboxes_per_box_rate_is_prob_over_3() -> None:
    """v0's (TranslateY_Only_BBoxes, 0.6, 6) alters each box independently at rate 0.2 (binomial, 4 sigma)."""
    sample = noise_sample(boxes=ONLY_BOXES)
    rng = np.random.default_rng(1234)
    draws, fired = 1000, 0
    for _ in range(draws):
        out = apply_op("TranslateY_Only_BBoxes", sample, rng, 0.6, 6)
        for x1, y1, x2, y2 in ONLY_BOXES.astype(int):
            fired += int(not np.array_equal(out.image[y1:y2, x1:x2], sample.image[y1:y2, x1:x2]))
    trials, rate = draws * len(ONLY_BOXES), 0.6 / 3
    assert abs(fired - trials * rate) <= 4 * math.sqrt(trials * rate * (1 - rate)), fired / trials


# ---------------------------------------------------------------------------------------------------------------------
# Pixel ops against PIL
# ---------------------------------------------------------------------------------------------------------------------


def pixel_test_images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (41, 57, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:41, 0:57]
    smooth = np.stack([xx * 4, yy * 5 + 20, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    narrow = (noise // 3 + 60).astype(np.uint8)
    constant = np.full((9, 11, 3), 77, dtype=np.uint8)
    return [noise, smooth, narrow, constant]


def max_diff(ours: np.ndarray, reference: Image.Image) -> int:
    assert ours.dtype == np.uint8 and ours.shape == np.asarray(reference).shape
    return int(np.abs(ours.astype(np.int32) - np.asarray(reference).astype(np.int32)).max())


def test_lut_ops_equal_pil_exactly() -> None:
    for image in pixel_test_images():
        pil = Image.fromarray(image)
        assert max_diff(aa.equalize(image), ImageOps.equalize(pil)) == 0
        assert max_diff(aa.autocontrast(image), ImageOps.autocontrast(pil)) == 0
        for threshold in (0, 26, 128, 204, 256):
            assert max_diff(aa.solarize(image, threshold), ImageOps.solarize(pil, threshold)) == 0
        for bits in range(1, 9):
            assert max_diff(aa.posterize(image, bits), ImageOps.posterize(pil, bits)) == 0
        for factor in (0.1, 0.46, 1.0, 1.54, 1.9):
            assert max_diff(aa.brightness(image, factor), ImageEnhance.Brightness(pil).enhance(factor)) == 0


def test_blend_ops_match_pil_within_one_level() -> None:
    """Color/Contrast use TF's grey level trunc((0.2989 R + 0.587 G + 0.114 B) * 255.5 / 255), PIL rounds its own
    weights, and Sharpness truncates the smoothed image where PIL rounds: each differs from PIL by at most 1."""
    for image in pixel_test_images():
        pil = Image.fromarray(image)
        for factor in (0.1, 0.46, 1.0, 1.18, 1.54, 1.9):
            assert max_diff(aa.color(image, factor), ImageEnhance.Color(pil).enhance(factor)) <= 1
            assert max_diff(aa.contrast(image, factor), ImageEnhance.Contrast(pil).enhance(factor)) <= 1
            assert max_diff(aa.sharpness(image, factor), ImageEnhance.Sharpness(pil).enhance(factor)) <= 1


def test_tf_specific_pixel_ops() -> None:
    image = pixel_test_images()[0]
    added = aa.solarize_add(image, 44)
    expected = np.where(image < 128, np.minimum(image.astype(int) + 44, 255), image)
    np.testing.assert_array_equal(added, expected)
    # 0 bits (v3's Posterize level 2) keeps the top bit, as TF's clamped shift does.
    np.testing.assert_array_equal(aa.posterize(image, 0), image & 0x80)


@pytest.mark.parametrize(
    "name, level, reference",
    [
        ("Equalize", 10, lambda im: aa.equalize(im)),
        ("AutoContrast", 3, lambda im: aa.autocontrast(im)),
        ("Color", 6, lambda im: aa.color(im, 1.18)),
        ("Sharpness", 8, lambda im: aa.sharpness(im, 1.54)),
        ("Contrast", 10, lambda im: aa.contrast(im, 1.9)),
        ("Brightness", 2, lambda im: aa.brightness(im, 0.46)),
        ("Solarize", 8, lambda im: aa.solarize(im, 204)),
        ("SolarizeAdd", 4, lambda im: aa.solarize_add(im, 44)),
        ("Posterize", 10, lambda im: aa.posterize(im, 4)),
        ("Posterize", 2, lambda im: aa.posterize(im, 0)),
    ],
)
def test_pixel_op_level_mapping(name: str, level: int, reference) -> None:
    sample = noise_sample()
    out = apply_op(name, sample, np.random.default_rng(0), 1.0, level)
    np.testing.assert_array_equal(out.image, reference(sample.image))
    np.testing.assert_array_equal(out.boxes, sample.boxes)


# ---------------------------------------------------------------------------------------------------------------------
# Probabilities
# ---------------------------------------------------------------------------------------------------------------------


def within_4_sigma(count: int, trials: int, p: float) -> bool:
    if p in (0.0, 1.0):
        return count == trials * p
    return abs(count - trials * p) <= 4 * math.sqrt(trials * p * (1 - p))


def test_subpolicy_choice_is_uniform() -> None:
    augment, rng = AutoAugment("v0"), np.random.default_rng(0)
    counts = np.bincount([augment.sample_subpolicy(rng) for _ in range(4000)], minlength=5)
    assert all(within_4_sigma(int(c), 4000, 0.2) for c in counts), counts


def test_v0_ops_fire_at_their_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 4000 images each sub-policy is chosen ~1/5 and each op runs at its prob (4 sigma); *_Only_BBoxes ops
    always run, their probability being applied per box (tested above)."""
    calls: list[tuple[int, str]] = []
    current = [-1]
    for name in OPS:
        monkeypatch.setitem(
            OPS, name, lambda sample, rng, level, prob, name=name: calls.append((current[0], name)) or sample
        )
    augment = AutoAugment("v0")
    original = augment.sample_subpolicy

    def spy(rng: np.random.Generator) -> int:
        current[0] = original(rng)
        chosen.append(current[0])
        return current[0]

    chosen: list[int] = []
    augment.sample_subpolicy = spy  # type: ignore[method-assign]
    sample, rng = noise_sample(), np.random.default_rng(99)
    for _ in range(4000):
        augment(sample, rng)
    counts = np.bincount(chosen, minlength=5)
    assert all(within_4_sigma(int(c), 4000, 0.2) for c in counts), counts
    for index, subpolicy in enumerate(AUTOAUGMENT_POLICIES["v0"]):
        for name, prob, _level in subpolicy:
            fired = calls.count((index, name))
            expected_prob = 1.0 if name in aa.BBOX_ONLY_OPS else prob
            assert within_4_sigma(fired, int(counts[index]), expected_prob), (name, fired, counts[index], prob)


# ---------------------------------------------------------------------------------------------------------------------
# Determinism, read-only inputs, empty boxes, speed
# ---------------------------------------------------------------------------------------------------------------------


def assert_deterministic_and_read_only(augment: Compose, seeds: int) -> None:
    """Each seed gives the same output twice, boxes are never inverted, and the (read-only) input is untouched."""
    base = scene()
    sample = read_only(base)
    for seed in range(seeds):
        first = augment(sample, np.random.default_rng(seed))
        second = augment(sample, np.random.default_rng(seed))
        np.testing.assert_array_equal(first.image, second.image)
        np.testing.assert_array_equal(first.boxes, second.boxes)
        np.testing.assert_array_equal(first.labels, second.labels)
        assert (first.boxes[:, 2:] >= first.boxes[:, :2]).all()
    np.testing.assert_array_equal(sample.image, base.image)
    np.testing.assert_array_equal(sample.boxes, base.boxes)


@pytest.mark.parametrize("policy", ["v0", "v1", "v2", "v3"])
def test_policy_is_deterministic_and_never_writes_its_input(policy: str) -> None:
    assert_deterministic_and_read_only(Compose([AutoAugment(policy)]), seeds=12)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_handles_read_only_input_and_empty_boxes(name: str) -> None:
    base = scene(60, 80, SCENE_BOXES / 4)
    sample = read_only(base)
    out = apply_op(name, sample, np.random.default_rng(3), 1.0, 7)
    assert out.image.shape == base.image.shape and out.image.dtype == np.uint8
    np.testing.assert_array_equal(sample.image, base.image)
    empty = Sample(image=sample.image, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    out = Compose([ForcedOp(name, 10)])(empty, np.random.default_rng(3))
    assert out.boxes.shape == (0, 4) and out.boxes.dtype == np.float32
    assert out.labels.shape == (0,) and out.labels.dtype == np.int64
    assert out.image.shape == base.image.shape


def test_policy_with_empty_boxes() -> None:
    empty = Sample(image=scene().image, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    for policy in AUTOAUGMENT_POLICIES:
        for seed in range(10):
            out = AutoAugment(policy)(empty, np.random.default_rng(seed))
            assert out.boxes.shape == (0, 4) and out.labels.shape == (0,)
