"""Fixtures shared across test folders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from od2.config import load_config
from od2.modeling.build import build_model

DIGITS_CONFIG = Path(__file__).resolve().parents[1] / "configs/digits/retinanet_lite0.yaml"
# The team's copy of BCCD next to a development checkout. Only tests look there: the library's catalog reads its
# datasets root (root=, DATASETS.ROOT, $OD2_DATASETS), so tests pass this folder as that root.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def image_check_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image integrity check's cache (od2.data.image_check) in a folder of this session, never ~/.cache."""
    folder = tmp_path_factory.mktemp("od2_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OD2_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def bccd_datasets_root() -> Path:
    """A datasets root holding ``bccd/`` (VOC layout); the test is skipped where there is none."""
    if not (SHARED_DATA / "bccd").is_dir():
        pytest.skip(f"BCCD not present at {SHARED_DATA / 'bccd'}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def confident_model():
    """The digits demo model (10 classes, random head) with its class prior raised to 0.5, so that random weights
    give the maximum number of detections per image to compare between inference paths."""
    torch.manual_seed(0)
    model = build_model(load_config(DIGITS_CONFIG), 10).eval()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(0.0)
    return model


# The tiny dataset of `path_datasets`: split -> image stem -> (class name, XYXY box in pixels) for 64x48 images.
TINY_CLASSES = ["cat", "dog"]
TINY_BOXES = {
    "train": {"a": [("cat", (4, 4, 20, 20)), ("dog", (30, 10, 60, 40))], "b": [("cat", (10, 8, 30, 30))]},
    "test": {"c": [("dog", (5, 5, 40, 40)), ("cat", (40, 20, 60, 44))]},
}
TINY_SIZE = (64, 48)  # width, height


@dataclasses.dataclass(frozen=True)
class PathDatasets:
    """A tiny dataset on disk in three formats.

    Attributes:
        names: format (coco, voc, yolo) -> split (train, test) -> the dataset's path name (``coco:...``,
            ``voc:...``, ``yolo:...``) with absolute paths.
        classes: the class names in label order.
        boxes: split -> image stem -> [(class name, XYXY box in pixels)], what every format holds.
        root: the folder holding coco/, voc/ and yolo/.
    """

    names: dict[str, dict[str, str]]
    classes: list[str]
    boxes: dict[str, dict[str, list[tuple[str, tuple[int, int, int, int]]]]]
    root: Path


@pytest.fixture(scope="session")
def path_datasets(tmp_path_factory: pytest.TempPathFactory) -> PathDatasets:
    """TINY_BOXES written as a COCO json pair, a VOC folder and a YOLO data.yaml, with PNG images."""
    root = tmp_path_factory.mktemp("path_datasets")
    width, height = TINY_SIZE
    names: dict[str, dict[str, str]] = {"coco": {}, "voc": {}, "yolo": {}}
    voc = root / "voc"
    for folder in (voc / "Annotations", voc / "JPEGImages", voc / "ImageSets" / "Main", root / "coco" / "annotations",
                   root / "yolo"):
        folder.mkdir(parents=True, exist_ok=True)
    (root / "yolo").joinpath("data.yaml").write_text("path: .\ntrain: images/train\ntest: images/test\n"
                                                     f"names: {TINY_CLASSES}\n")
    for split, images in TINY_BOXES.items():
        coco_images, coco_annotations = [], []
        for image_id, (stem, boxes) in enumerate(images.items(), start=1):
            pixels = np.random.default_rng(image_id).integers(0, 255, (height, width, 3), dtype=np.uint8)
            for folder in (voc / "JPEGImages", root / "coco" / split, root / "yolo" / "images" / split,
                           root / "yolo" / "labels" / split):
                folder.mkdir(parents=True, exist_ok=True)
            for folder in (voc / "JPEGImages", root / "coco" / split, root / "yolo" / "images" / split):
                Image.fromarray(pixels).save(folder / f"{stem}.png")
            # VOC pixel indices are 1-based and inclusive: a box [x0, x1) covers pixels x0 + 1 .. x1.
            objects = "".join(f"<object><name>{c}</name><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}"
                              f"</xmax><ymax>{y1}</ymax></bndbox></object>" for c, (x0, y0, x1, y1) in boxes)
            (voc / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.png</filename><size><width>{width}</width><height>{height}</height>"
                f"</size>{objects}</annotation>")
            (root / "yolo" / "labels" / split / f"{stem}.txt").write_text("".join(
                f"{TINY_CLASSES.index(c)} {(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} {(x1 - x0) / width} "
                f"{(y1 - y0) / height}\n" for c, (x0, y0, x1, y1) in boxes))
            coco_images.append({"id": image_id, "file_name": f"{stem}.png", "width": width, "height": height})
            coco_annotations += [{"id": len(coco_annotations) + k + 1, "image_id": image_id,
                                  "category_id": TINY_CLASSES.index(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0]}
                                 for k, (c, (x0, y0, x1, y1)) in enumerate(boxes)]
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{stem}\n" for stem in images))
        json_file = root / "coco" / "annotations" / f"instances_{split}.json"
        json_file.write_text(json.dumps({"images": coco_images, "annotations": coco_annotations, "categories": [
            {"id": k + 1, "name": c} for k, c in enumerate(TINY_CLASSES)]}))
        names["coco"][split] = f"coco:{json_file}"
        names["voc"][split] = f"voc:{voc}:{split}"
        names["yolo"][split] = f"yolo:{root / 'yolo' / 'data.yaml'}:{split}"
    return PathDatasets(names, TINY_CLASSES, TINY_BOXES, root)
