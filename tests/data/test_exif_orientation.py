"""EXIF orientation, one convention for every reader: od2 ignores it. ``read_image`` returns pixels in stored order
(the twin file without the tag decodes to the same array), and the COCO and VOC loaders take sizes and boxes in
stored order, so the boxes land on the pixels the model sees (YOLO: tests/data/test_yolo.py). Annotations made on
the displayed (rotated) image of an orientation 5-8 file carry swapped sizes, and reading the image is an error
naming the file and EXIF instead of boxes on the wrong pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from od2.data.datasets.coco import load_coco_json
from od2.data.datasets.voc import load_voc
from od2.data.image_io import ImageSizeError, read_image
from od2.data.loader import DetectionDataset
from od2.data.transforms import Compose

ORIENTATION = 0x0112
STORED_WH = (100, 50)  # a landscape image as stored; orientations 6 and 8 display it as portrait 50x100
BOX_XYWH = [10, 5, 20, 10]


def write_jpeg(path: Path, orientation: int | None) -> Path:
    """The same pixels every time (a horizontal gradient, so rotations differ), with or without an EXIF tag."""
    width, height = STORED_WH
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif)
    return path


def test_the_helper_writes_the_tag(tmp_path):
    with Image.open(write_jpeg(tmp_path / "a.jpg", 6)) as im:
        assert im.getexif()[ORIENTATION] == 6


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_read_image_ignores_the_orientation_tag(tmp_path, orientation):
    tagged = read_image(write_jpeg(tmp_path / "tagged.jpg", orientation))
    plain = read_image(write_jpeg(tmp_path / "plain.jpg", None))
    assert tagged.shape == (STORED_WH[1], STORED_WH[0], 3)
    np.testing.assert_array_equal(tagged, plain)
    with Image.open(tmp_path / "tagged.jpg") as im:  # PIL without exif_transpose: the stored order too
        assert im.size == STORED_WH


def dataset_item(record: dict) -> dict:
    return DetectionDataset([record], Compose([]), is_train=False)[0]


def expected_xyxy() -> list[float]:
    x, y, w, h = BOX_XYWH
    return [x, y, x + w, y + h]


def write_coco_for(image: Path, width: int, height: int) -> Path:
    data = {"images": [{"id": 1, "file_name": image.name, "width": width, "height": height}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": BOX_XYWH}],
            "categories": [{"id": 1, "name": "thing"}]}
    path = image.parent / "instances.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_coco_sizes_and_boxes_are_in_stored_order(tmp_path, orientation):
    image = write_jpeg(tmp_path / "images" / "a.jpg", orientation)
    info = load_coco_json(write_coco_for(image, *STORED_WH), image.parent)
    record = info.records[0]
    assert (record["height"], record["width"]) == (STORED_WH[1], STORED_WH[0])
    item = dataset_item(record)
    assert tuple(item["image"].shape) == (3, STORED_WH[1], STORED_WH[0])
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), read_image(write_jpeg(
        tmp_path / "plain.jpg", None)))
    assert item["boxes"].tolist() == [expected_xyxy()]


@pytest.mark.parametrize("orientation", [6, 8])
def test_coco_sizes_of_the_displayed_image_are_an_error_naming_the_file_and_exif(tmp_path, orientation):
    image = write_jpeg(tmp_path / "images" / "a.jpg", orientation)
    displayed_wh = STORED_WH[::-1]  # what an EXIF-aware annotation tool writes
    record = load_coco_json(write_coco_for(image, *displayed_wh), image.parent).records[0]
    with pytest.raises(ImageSizeError, match="EXIF") as raised:
        dataset_item(record)
    assert str(image) in str(raised.value)


def voc_with(image_orientation: int, size_wh: tuple[int, int] | None, root: Path) -> Path:
    write_jpeg(root / "JPEGImages" / "a.jpg", image_orientation)
    x1, y1, x2, y2 = expected_xyxy()
    size = f"<size><width>{size_wh[0]}</width><height>{size_wh[1]}</height></size>" if size_wh else ""
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename>{size}<object><name>thing</name><bndbox><xmin>{x1}</xmin>"
        f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    return root


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("size_given", [True, False])  # <size> written, or read from the image's header
def test_voc_sizes_and_boxes_are_in_stored_order(tmp_path, orientation, size_given):
    root = voc_with(orientation, STORED_WH if size_given else None, tmp_path / "voc")
    record = load_voc(root, "train").records[0]
    assert (record["height"], record["width"]) == (STORED_WH[1], STORED_WH[0])
    item = dataset_item(record)
    assert tuple(item["image"].shape) == (3, STORED_WH[1], STORED_WH[0])
    # VOC's pixel indices are 1-based; the loader's conversion is the same for every orientation
    assert item["boxes"].tolist() == [list(map(float, record["boxes"][0]))]
    assert record["boxes"].tolist() == load_voc(voc_with(1, STORED_WH, tmp_path / "plain"), "train").records[0][
        "boxes"].tolist()


def test_voc_size_of_the_displayed_image_is_an_error_naming_the_file_and_exif(tmp_path):
    root = voc_with(6, STORED_WH[::-1], tmp_path / "voc")
    record = load_voc(root, "train").records[0]
    with pytest.raises(ImageSizeError, match="EXIF"):
        dataset_item(record)
