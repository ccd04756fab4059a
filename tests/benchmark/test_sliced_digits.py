"""benchmarks/sliced_digits.py's large-image set: canvases tiled from digits scenes, whose boxes must land on the
digits (the AP it reports for sliced inference is only as good as these boxes)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

from od2.data.datasets.digits import load_digits_split

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sliced_digits.py"


def load_script():
    spec = importlib.util.spec_from_file_location("sliced_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_canvas_boxes_are_the_scenes_boxes_shifted_onto_the_same_pixels(tmp_path):
    info = load_digits_split(tmp_path / "root", "val", num_train=2, num_val=3, seed=5)
    out = tmp_path / "large"
    out.mkdir()
    grid, cell = 2, 256
    coco = json.loads(load_script().build_canvases(info, out, grid=grid, count=2).read_text())

    assert [(i["id"], i["height"], i["width"]) for i in coco["images"]] == [(1, 512, 512), (2, 512, 512)]
    for image in coco["images"]:
        canvas = np.asarray(Image.open(out / image["file_name"]))
        expected, covered = [], np.zeros(canvas.shape[:2], bool)
        for k in range(grid * grid):  # scenes in order, wrapping around the 3 of the split
            record = info.records[((image["id"] - 1) * grid * grid + k) % len(info.records)]
            scene = np.asarray(Image.open(record["file_name"]).convert("RGB"))
            y0, x0 = (k // grid) * cell, (k % grid) * cell
            covered[y0:y0 + scene.shape[0], x0:x0 + scene.shape[1]] = True
            for (x1, y1, x2, y2), label in zip(record["boxes"].tolist(), record["labels"].tolist()):
                expected.append((info.category_ids[label], x0 + x1, y0 + y1, x2 - x1, y2 - y1))
                # the digit's pixels in its scene are the canvas pixels under the shifted box
                sx1, sy1, sx2, sy2 = int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2))
                np.testing.assert_array_equal(canvas[y0 + sy1:y0 + sy2, x0 + sx1:x0 + sx2], scene[sy1:sy2, sx1:sx2])
        got = [(a["category_id"], *a["bbox"]) for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(got) == len(expected) > 0
        np.testing.assert_allclose(sorted(got), sorted(expected), atol=1e-4)
        assert not canvas[~covered].any()  # black around the scenes
