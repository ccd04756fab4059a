"""COCO and VOC loaders, the record helpers, and BCCD through the catalog."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from od2.data.catalog import get_dataset
from od2.data.datasets.coco import load_coco_json
from od2.data.datasets.voc import load_voc
from od2.data.records import DatasetInfo, clean_boxes, make_record, merge_datasets

# ----------------------------------------------------------------------------- helpers


def write_coco(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def small_coco(tmp_path: Path) -> Path:
    """Three 100x50 images: one normal, one with problem boxes, one without annotations."""
    images = [{"id": i, "file_name": f"im{i}.jpg", "height": 50, "width": 100} for i in (7, 8, 9)]
    categories = [{"id": 5, "name": "five"}, {"id": 2, "name": "two"}]
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 5, "bbox": [10, 5, 20, 10], "area": 123.0, "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 30, 40], "iscrowd": 1},
        {"id": 3, "image_id": 8, "category_id": 2, "bbox": [90, 40, 20, 20], "segmentation": [[1, 2, 3]]},
        {"id": 4, "image_id": 8, "category_id": 5, "bbox": [30, 30, 0, 10]},  # zero width
        {"id": 5, "image_id": 8, "category_id": 5, "bbox": [120, 10, 5, 5]},  # right of the image
        {"id": 6, "image_id": 8, "category_id": 5, "bbox": [40, 20, -5, 10]},  # negative width
    ]
    return write_coco(tmp_path / "instances.json", images, annotations, categories)


def write_voc(root: Path, files: dict[str, str], splits: dict[str, list[str]]) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for stem, xml in files.items():
        (root / "Annotations" / f"{stem}.xml").write_text(xml, encoding="utf-8")
    for split, stems in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n", encoding="utf-8")
    return root


def voc_xml(objects: list[tuple], width: int | None = 100, height: int = 80, filename: str = "") -> str:
    """objects: (name, xmin, ymin, xmax, ymax[, difficult])."""
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if width else ""
    body = ""
    for name, x1, y1, x2, y2, *difficult in objects:
        diff = f"<difficult>{difficult[0]}</difficult>" if difficult else ""
        body += (
            f"<object><name>{name}</name>{diff}<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return f"<annotation><filename>{filename}</filename>{size}{body}</annotation>"


def gt_as_detections_ap(coco_gt: dict) -> float:
    """AP of pycocotools COCOeval when the non-crowd ground truth is submitted as detections."""
    gt = COCO()
    gt.dataset = json.loads(json.dumps(coco_gt))
    gt.createIndex()
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in coco_gt["annotations"]
        if not a["iscrowd"]
    ]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0])


# ----------------------------------------------------------------------------- records


def test_make_record_dtypes_and_empty_shapes():
    r = make_record("/a.jpg", 3, 10, 20, [], [], [])
    assert r["boxes"].shape == (0, 4) and r["boxes"].dtype == np.float32
    assert r["labels"].dtype == np.int64 and r["iscrowd"].dtype == bool
    with pytest.raises(ValueError, match="/a.jpg"):
        make_record("/a.jpg", 3, 10, 20, [[0, 0, 1, 1]], [0, 1], [False])


def test_clean_boxes_clips_drops_and_counts():
    boxes = np.array(
        [[-5, 2, 10, 8], [1, 1, 4, 4], [3, 3, 3, 9], [30, 1, 40, 5], [2, 9, 25, 12]], dtype=float
    )
    out = clean_boxes(boxes, heights=10, widths=20, source="f.json")
    assert out.keep.tolist() == [True, True, False, False, True]
    np.testing.assert_array_equal(out.boxes, [[0, 2, 10, 8], [1, 1, 4, 4], [2, 9, 20, 10]])
    assert (out.num_clipped, out.num_degenerate) == (2, 2)


def test_clean_boxes_rejects_nan_naming_source_and_box():
    with pytest.raises(ValueError, match=r"f\.json: box 42 has a non-finite"):
        clean_boxes(np.array([[0, 0, 1, 1], [0, np.nan, 1, 1]]), 5, 5, "f.json", box_names=[41, 42])


def test_merge_datasets_concatenates_and_checks():
    def ds(name, image_id, classes=("a",)):
        gt = {"images": [{"id": image_id}], "annotations": [{"id": image_id}], "categories": []}
        rec = make_record(f"/{name}.jpg", image_id, 5, 5, [[0, 0, 1, 1]], [0], [False])
        category_ids = list(range(1, len(classes) + 1))
        return DatasetInfo(name, [rec], list(classes), category_ids, gt, {"clipped_box": 1})

    merged = merge_datasets("m", [ds("x", 1), ds("y", 2)])
    assert [r["image_id"] for r in merged.records] == [1, 2]
    assert len(merged.coco_gt["images"]) == 2 and merged.skipped == {"clipped_box": 2}
    with pytest.raises(ValueError, match="categories differ"):
        merge_datasets("m", [ds("x", 1), ds("y", 2, classes=("b",))])
    with pytest.raises(ValueError, match="image ids"):
        merge_datasets("m", [ds("x", 1), ds("y", 1)])


# ----------------------------------------------------------------------------- COCO


def test_coco_labels_boxes_and_records(tmp_path):
    info = load_coco_json(small_coco(tmp_path), tmp_path / "imgs", name="small")
    assert info.name == "small"
    # Contiguous labels follow sorted category ids: id 2 -> label 0, id 5 -> label 1.
    assert info.class_names == ["two", "five"] and info.category_ids == [2, 5]
    assert [r["image_id"] for r in info.records] == [7, 8, 9]
    r7, r8, r9 = info.records
    assert r7["file_name"] == str(tmp_path / "imgs" / "im7.jpg")
    assert (r7["height"], r7["width"]) == (50, 100)
    np.testing.assert_array_equal(r7["boxes"], [[10, 5, 30, 15], [0, 0, 30, 40]])
    assert r7["labels"].tolist() == [1, 0]
    assert r7["iscrowd"].tolist() == [False, True]  # crowd kept, flagged
    # Image 8: box 3 clipped at the right/bottom edge; boxes 4-6 degenerate and dropped.
    np.testing.assert_array_equal(r8["boxes"], [[90, 40, 100, 50]])
    assert info.skipped == {"clipped_box": 1, "degenerate_box": 3}
    # Image without annotations kept as a negative.
    assert r9["boxes"].shape == (0, 4) and r9["boxes"].dtype == np.float32 and r9["labels"].dtype == np.int64


def test_coco_gt_fills_area_and_iscrowd_and_keeps_given_ones(tmp_path):
    info = load_coco_json(small_coco(tmp_path), tmp_path)
    anns = {a["id"]: a for a in info.coco_gt["annotations"]}
    assert len(anns) == 6  # coco_gt is the file as written, degenerate boxes included
    assert anns[1]["area"] == 123.0 and anns[1]["iscrowd"] == 0
    assert anns[2]["area"] == 30 * 40 and anns[2]["iscrowd"] == 1
    assert anns[3]["iscrowd"] == 0 and "segmentation" not in anns[3]
    kept = load_coco_json(small_coco(tmp_path), tmp_path, keep_segmentation=True)
    assert kept.coco_gt["annotations"][2]["segmentation"] == [[1, 2, 3]]


def test_coco_unknown_category_names_file_annotation_and_id(tmp_path):
    f = write_coco(
        tmp_path / "bad.json",
        [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}],
        [{"id": 77, "image_id": 1, "category_id": 13, "bbox": [0, 0, 2, 2]}],
        [{"id": 1, "name": "x"}],
    )
    with pytest.raises(ValueError) as e:
        load_coco_json(f, tmp_path)
    assert str(f) in str(e.value) and "annotations[0] (id 77)" in str(e.value) and "category_id 13" in str(e.value)


def test_coco_malformed_json_names_file(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('{"images": [')
    with pytest.raises(ValueError, match=f"{f}: not valid JSON"):
        load_coco_json(f, tmp_path)


IMAGE = {"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}
CATEGORIES = [{"id": 1, "name": "x"}]


@pytest.mark.parametrize(
    ("images", "annotations", "key"),
    [
        (None, [], "images"),
        ([{"id": 1, "file_name": "a.jpg", "width": 10}], [], "height"),
        ([IMAGE], [{"id": 3, "image_id": 1, "category_id": 1}], "bbox"),
    ],
)
def test_coco_missing_key_names_file_and_key(tmp_path, images, annotations, key):
    data = {"annotations": annotations, "categories": CATEGORIES}
    if images is not None:
        data["images"] = images
    f = tmp_path / "missing.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"{f}: missing required key '{key}'"):
        load_coco_json(f, tmp_path)


def test_coco_nan_box_and_unknown_image_are_errors(tmp_path):
    nan_box = {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, float("nan"), 2, 2]}
    f = write_coco(tmp_path / "nan.json", [IMAGE], [nan_box], CATEGORIES)
    with pytest.raises(ValueError, match=r"nan\.json: box annotations\[0\] \(id 9\) has a non-finite"):
        load_coco_json(f, tmp_path)
    orphan = {"id": 9, "image_id": 4, "category_id": 1, "bbox": [0, 0, 2, 2]}
    f = write_coco(tmp_path / "img.json", [IMAGE], [orphan], CATEGORIES)
    with pytest.raises(ValueError, match=r"img\.json: annotations\[0\] \(id 9\) refers to unknown image_id 4"):
        load_coco_json(f, tmp_path)


def test_coco_image_info_file_without_annotations(tmp_path):
    f = tmp_path / "test-dev.json"
    f.write_text(json.dumps({"images": [IMAGE], "categories": CATEGORIES}))
    info = load_coco_json(f, tmp_path)
    assert len(info.records) == 1 and info.coco_gt["annotations"] == []


def test_coco_malformed_json_names_the_line_and_column(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('{\n  "images": [],\n  "categories": [}\n')  # a brace where a value belongs, line 3 column 18
    with pytest.raises(ValueError, match=f"{f}: not valid JSON .*line 3 column 18"):
        load_coco_json(f, tmp_path)


@pytest.mark.parametrize(("images", "annotations", "categories", "where"), [
    ([IMAGE, IMAGE], [], CATEGORIES, r"images\[1\]: image id 1 appears twice \(first at images\[0\]\)"),
    ([IMAGE], [], [*CATEGORIES, {"id": 1, "name": "y"}], r"categories\[1\]: category id 1 appears twice"),
    ([IMAGE], [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]},
               {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, "a", 2, 2]}], CATEGORIES,
     r"annotations\[1\] \(id 5\) has bbox \[0, 'a', 2, 2\] with a non-numeric coordinate"),
    ([IMAGE], [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2]}], CATEGORIES,
     r"annotations\[0\] \(id 4\) has bbox \[0, 0, 2\], expected \[x, y, w, h\]"),
    ([IMAGE], [{"id": 4, "image_id": 1, "category_id": 1}], CATEGORIES,
     r"missing required key 'bbox' in annotations\[0\] \(id 4\)"),
])
def test_coco_errors_name_the_file_and_the_json_index(tmp_path, images, annotations, categories, where):
    f = write_coco(tmp_path / "bad.json", images, annotations, categories)
    with pytest.raises(ValueError, match=rf"bad\.json: {where}"):
        load_coco_json(f, tmp_path)


# ----------------------------------------------------------------------------- VOC


@pytest.fixture
def tiny_voc(tmp_path):
    files = {
        "a": voc_xml([("dog", 1, 1, 10, 20), ("cat", 5, 6, 50, 60, 1)]),
        # A click (zero-area box), a box past the right edge, and a difficult=0 dog.
        "b": voc_xml([("cat", 30, 30, 30, 30), ("dog", 90, 10, 110, 20), ("dog", 2, 3, 4, 5, 0)]),
        "c": voc_xml([("zebra", 1, 1, 5, 5)]),
    }
    return write_voc(tmp_path / "VOC", files, {"train": ["a", "b"], "val": ["c"]})


def test_voc_records_coordinates_and_skips(tiny_voc):
    info = load_voc(tiny_voc, "train")
    assert info.name == "VOC_train"
    # Class names come from every xml (zebra only appears in val), sorted.
    assert info.class_names == ["cat", "dog", "zebra"] and info.category_ids == [1, 2, 3]
    a, b = info.records
    assert a["file_name"] == str(tiny_voc / "JPEGImages" / "a.jpg")
    assert (a["image_id"], a["height"], a["width"]) == (1, 80, 100)
    # 1-based inclusive pixels: min - 1, max as is.
    np.testing.assert_array_equal(a["boxes"], [[0, 0, 10, 20], [4, 5, 50, 60]])
    assert a["labels"].tolist() == [1, 0] and a["iscrowd"].tolist() == [False, True]
    np.testing.assert_array_equal(b["boxes"], [[89, 9, 100, 20], [1, 2, 4, 5]])
    assert b["labels"].tolist() == [1, 1]
    assert info.skipped == {"clipped_box": 1, "degenerate_box": 1}
    assert load_voc(tiny_voc, "val").class_names == info.class_names


def test_voc_coco_gt_is_evaluable(tiny_voc):
    gt = load_voc(tiny_voc, "train").coco_gt
    assert [c["name"] for c in gt["categories"]] == ["cat", "dog", "zebra"]
    ann = gt["annotations"][0]
    assert ann["bbox"] == [0.0, 0.0, 10.0, 20.0] and ann["area"] == 200.0 and ann["category_id"] == 2
    assert gt_as_detections_ap(gt) == pytest.approx(1.0)


def test_voc_given_class_names_and_unknown_name(tiny_voc):
    info = load_voc(tiny_voc, "train", class_names=["dog", "cat"])
    assert info.records[0]["labels"].tolist() == [0, 1]
    with pytest.raises(ValueError) as e:
        load_voc(tiny_voc, "val", class_names=["dog", "cat"])
    assert str(tiny_voc / "Annotations" / "c.xml") in str(e.value) and "'zebra'" in str(e.value)


def test_voc_malformed_xml_names_file(tiny_voc):
    bad = tiny_voc / "Annotations" / "b.xml"
    bad.write_text("<annotation><object><name>dog</name>")
    with pytest.raises(ValueError, match=f"{bad}: malformed XML"):
        load_voc(tiny_voc, "train", class_names=["cat", "dog"])


def test_voc_malformed_xml_names_the_line_and_column(tiny_voc):
    bad = tiny_voc / "Annotations" / "b.xml"
    bad.write_text("<annotation>\n  <object>\n    <name>dog</nam>\n  </object>\n</annotation>\n")
    with pytest.raises(ValueError, match=f"{bad}: malformed XML .*line 3, column 15"):
        load_voc(tiny_voc, "train", class_names=["cat", "dog"])


@pytest.mark.parametrize(("objects", "size", "message"), [
    ([("dog", 1, 1, 5, 5), ("dog", 1, "x", 5, 5)], 100, r"/annotation/object\[2\]/bndbox/ymin is 'x', not a number"),
    ([("dog", 1, 1, "nan", 5)], 100, r"/annotation/object\[1\]/bndbox/xmax is 'nan', not a finite number"),
    ([("dog", 1, 1, 5, 5, "hard")], 100, r"/annotation/object\[1\]/difficult is 'hard', not a number"),
    ([("dog", 1, 1, 5, 5)], "wide", r"/annotation/size/width is 'wide', not a number"),
])
def test_voc_errors_name_the_file_and_the_element_path(tmp_path, objects, size, message):
    root = write_voc(tmp_path / "v", {"a": voc_xml(objects, width=size)}, {"all": ["a"]})
    with pytest.raises(ValueError, match=rf"a\.xml: {message}"):
        load_voc(root, "all", class_names=["dog"])


def test_voc_missing_split_and_missing_bndbox(tiny_voc):
    with pytest.raises(FileNotFoundError, match="test.txt"):
        load_voc(tiny_voc, "test")
    no_box = "<annotation><object><name>dog</name></object></annotation>"
    (tiny_voc / "Annotations" / "c.xml").write_text(no_box)
    with pytest.raises(ValueError, match=r"c\.xml: /annotation/object\[1\] \('dog'\) has no <bndbox>"):
        load_voc(tiny_voc, "val", class_names=["dog"])


def test_voc_size_missing_is_read_from_the_image(tmp_path):
    xml = voc_xml([("dog", 1, 1, 3, 3)], width=None, filename="x.png")
    root = write_voc(tmp_path / "v", {"x": xml}, {"all": ["x"]})
    Image.new("RGB", (33, 22)).save(root / "JPEGImages" / "x.png")
    (r,) = load_voc(root, "all").records
    assert (r["height"], r["width"]) == (22, 33) and r["file_name"].endswith("x.png")


def test_voc_class_name_typo_is_warned_once_with_the_likely_class(tmp_path, caplog):
    """A misspelt name in one xml file becomes a class of its own: a warning names it, its box count, the splits
    without it and the class it resembles."""
    dogs_and_cats = voc_xml([("dog", 1, 1, 10, 10)] * 60 + [("cat", 20, 20, 30, 30)] * 40)
    files = {"a": dogs_and_cats, "b": dogs_and_cats, "t": voc_xml([("dgo", 1, 1, 10, 10), ("cat", 5, 5, 9, 9)])}
    root = write_voc(tmp_path / "VOC", files, {"train": ["a"], "val": ["b"], "test": ["t"]})
    (root / "ImageSets" / "Main" / "dog_train.txt").write_text("a 1\n")  # a VOC per-class list: not a split
    with caplog.at_level(logging.WARNING, logger="od2.data.datasets.voc"):
        train, test = load_voc(root, "train"), load_voc(root, "test")
    assert train.class_names == test.class_names == ["cat", "dgo", "dog"]  # as before: one list for every split
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "class 'dgo' has 1 box " in warnings[0] and "only in split test (none in train, val)" in warnings[0]
    assert "'dog'?" in warnings[0] and "class_names.txt" in warnings[0] and "dog_train" not in warnings[0]
    assert all("'cat'" not in w and "class 'dog'" not in w for w in warnings)


def test_voc_class_names_file_fixes_the_list_for_every_split(tiny_voc):
    (tiny_voc / "class_names.txt").write_text("zebra\ndog\ncat\n")
    assert load_voc(tiny_voc, "train").class_names == load_voc(tiny_voc, "val").class_names == ["zebra", "dog", "cat"]
    assert load_voc(tiny_voc, "train").records[0]["labels"].tolist() == [1, 2]
    (tiny_voc / "class_names.txt").write_text("dog\ncat\n")
    with pytest.raises(ValueError, match=r"c\.xml: /annotation/object\[1\]: class name 'zebra' is not in class_names"):
        load_voc(tiny_voc, "val")
    (tiny_voc / "class_names.txt").write_text("dog\ncat\ndog\n")
    with pytest.raises(ValueError, match=r"class_names\.txt: 'dog' is listed twice"):
        load_voc(tiny_voc, "val")


def test_voc_class_names_are_read_as_utf8_whatever_the_locale(tmp_path):
    """Class names with accents in the xml files and class_names.txt, read in a process whose locale is ASCII.
    (File names stay ASCII: Python cannot name other files in such a locale.)"""
    root = write_voc(tmp_path / "VOC", {"a": voc_xml([("chèvre", 1, 1, 5, 5)])}, {"train": ["a"]})
    (root / "class_names.txt").write_text("chèvre\n", encoding="utf-8")
    code = f"from od2.data.datasets.voc import load_voc; print(load_voc({str(root)!r}, 'train').class_names)"
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "utf-8"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['chèvre']"


# ----------------------------------------------------------------------------- BCCD


def test_bccd_splits_through_catalog(bccd_datasets_root):
    splits = {s: get_dataset(f"bccd_{s}", root=bccd_datasets_root) for s in ("train", "val", "test", "trainval")}
    assert [len(splits[s]) for s in ("train", "val", "test", "trainval")] == [205, 87, 72, 292]
    for info in splits.values():
        assert info.class_names == ["Platelets", "RBC", "WBC"]
    assert sum(splits[s].skipped["degenerate_box"] for s in ("train", "val", "test")) == 2
    assert splits["trainval"].skipped["degenerate_box"] == 2
    total = sum(len(r["boxes"]) for s in ("train", "val", "test") for r in splits[s].records)
    assert total == 4888 - 2


def test_bccd_boxes_match_the_xml(bccd_datasets_root):
    records = {Path(r["file_name"]).stem: r for r in get_dataset("bccd_trainval", root=bccd_datasets_root).records}
    records.update({Path(r["file_name"]).stem: r for r in get_dataset("bccd_test", root=bccd_datasets_root).records})
    for stem in ("BloodImage_00000", "BloodImage_00338", "BloodImage_00343"):
        objects = ET.parse(bccd_datasets_root / "bccd" / "Annotations" / f"{stem}.xml").getroot().findall("object")
        shift = {"xmin": 1, "ymin": 1, "xmax": 0, "ymax": 0}
        expected = [[float(o.findtext(f"bndbox/{k}")) - d for k, d in shift.items()] for o in objects]
        expected = [b for b in expected if b[2] - b[0] > 1 and b[3] - b[1] > 1]  # the two clicks go
        np.testing.assert_array_equal(records[stem]["boxes"], np.array(expected, dtype=np.float32))
        assert Path(records[stem]["file_name"]).is_file()
