"""Drawing detections and tiling prediction grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from od2.utils.visualize import class_color, draw_detections, save_prediction_grid

NAMES = ["cat", "dog", "a-very-long-class-name"]


def test_class_colors_are_deterministic_and_distinct():
    colors = [class_color(label) for label in range(20)]
    assert colors == [class_color(label) for label in range(20)]
    assert len(set(colors)) == 20
    assert all(0 <= c <= 255 for color in colors for c in color)


def test_box_outline_has_the_class_color_and_inside_is_untouched():
    image = np.zeros((100, 120, 3), np.uint8)
    out = draw_detections(image, np.array([[10, 30, 60, 80]]), np.array([1]), None, NAMES, line_width=2)
    color = np.array(class_color(1), np.uint8)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[30:81, 10:12] == color).all(), "left edge"
    assert (out[30:81, 59:61] == color).all(), "right edge"
    assert (out[79:81, 10:61] == color).all(), "bottom edge"
    assert (out[50:75, 15:55] == 0).all(), "inside of the box"
    assert not image.any(), "input image must not be modified"


def test_caption_has_a_filled_background_above_the_box():
    image = np.zeros((100, 120, 3), np.uint8)
    out = draw_detections(image, np.array([[20, 40, 90, 90]]), np.array([0]), np.array([0.9]), NAMES)
    above = out[:40, 20:90]
    assert (above == np.array(class_color(0), np.uint8)).all(axis=-1).sum() > 100
    assert (above != 0).any(axis=-1).sum() > (above == np.array(class_color(0))).all(axis=-1).sum(), "text"


def test_caption_stays_inside_the_image_at_the_right_border():
    image = np.zeros((80, 100, 3), np.uint8)
    box = np.array([[94, 30, 99, 60]])
    out = draw_detections(image, box, np.array([2]), np.array([0.8]), NAMES)
    filled = (out[:30] == np.array(class_color(2), np.uint8)).all(axis=-1)
    # The long caption is shifted left rather than clipped to the 6 pixels right of x=94.
    assert filled[:, :94].sum() > 100


def test_caption_goes_inside_the_box_at_the_top_border():
    image = np.zeros((80, 100, 3), np.uint8)
    out = draw_detections(image, np.array([[10, 0, 90, 70]]), np.array([0]), None, NAMES)
    # Filled background plus text: nothing left black just below the top edge, inside the box.
    assert (out[2:10, 12:30] != 0).any(axis=-1).all()


def test_score_threshold_and_tensor_inputs():
    image = np.full((50, 50, 3), 7, np.uint8)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 40.0]])
    out = draw_detections(image, boxes, torch.tensor([0]), torch.tensor([0.2]), NAMES, score_thresh=0.3)
    np.testing.assert_array_equal(out, image)
    out = draw_detections(image, boxes, torch.tensor([0]), torch.tensor([0.5]), NAMES, score_thresh=0.3)
    assert (out != image).any()


def test_boxes_outside_or_inverted_do_not_crash():
    image = np.zeros((40, 40, 3), np.uint8)
    boxes = np.array([[-20, -20, 80, 80], [30, 30, 10, 10], [100, 100, 120, 120]], np.float32)
    out = draw_detections(image, boxes, np.array([0, 1, 2]), np.array([0.9, 0.9, 0.9]), NAMES)
    assert (out[39, :] == np.array(class_color(0), np.uint8)).all(), "clipped outline on the border"


def test_rejects_non_uint8_hwc_images():
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros((3, 20, 20), np.float32), np.zeros((0, 4)), np.zeros(0), None, NAMES)


def test_prediction_grid_png_has_the_expected_size_and_content(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (25, 10), (15, 40)]]
    path = tmp_path / "out" / "grid.png"
    save_prediction_grid(images, path, ncols=2, spacing=4)
    grid = np.asarray(Image.open(path).convert("RGB"))
    # Cells of 25 x 40 (the largest height and width), 2 columns x 2 rows, 4 pixels apart.
    assert grid.shape == (2 * 25 + 4, 2 * 40 + 4, 3)
    np.testing.assert_array_equal(grid[:20, :30], images[0])
    np.testing.assert_array_equal(grid[:25, 44:54], images[1])
    np.testing.assert_array_equal(grid[29:44, :40], images[2])
    assert (grid[29:, 44:] == 255).all(), "empty cell is background"
