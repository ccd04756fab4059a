"""Datasets named by path, without registration: ``coco:ANNOTATIONS.json[:IMAGE_DIR]``, ``voc:ROOT:SPLIT`` and
``yolo:PATH/data.yaml:SPLIT`` read the same boxes; relative paths, the COCO image-folder rule and bad names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from od2.data import catalog
from od2.data.catalog import DatasetNotFoundError, get_dataset


@pytest.fixture(autouse=True)
def isolated_catalog(monkeypatch):
    monkeypatch.setattr(catalog, "_cache", {})


def boxes_by_image(info) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """image stem -> sorted (class name, XYXY box) of a loaded dataset."""
    return {Path(r["file_name"]).stem: sorted((info.class_names[label], tuple(float(v) for v in box))
                                              for box, label in zip(r["boxes"], r["labels"]))
            for r in info.records}


def expected(boxes: dict) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    return {stem: sorted((c, tuple(float(v) for v in box)) for c, box in image_boxes)
            for stem, image_boxes in boxes.items()}


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_each_form_reads_the_written_boxes(path_datasets, fmt, split):
    info = get_dataset(path_datasets.names[fmt][split])
    assert info.name == path_datasets.names[fmt][split]
    assert info.class_names == path_datasets.classes
    got = boxes_by_image(info)
    want = expected(path_datasets.boxes[split])
    assert got.keys() == want.keys()
    for stem in want:  # YOLO's normalised coordinates round-trip through float32
        assert [c for c, _ in got[stem]] == [c for c, _ in want[stem]]
        np.testing.assert_allclose([b for _, b in got[stem]], [b for _, b in want[stem]], atol=1e-4)
    assert all(Path(r["file_name"]).is_file() for r in info.records)


def test_coco_image_dir_named_after_the_json(path_datasets, tmp_path):
    json_file = Path(path_datasets.names["coco"]["test"].removeprefix("coco:"))
    elsewhere = tmp_path / "imgs"
    shutil.copytree(json_file.parent.parent / "test", elsewhere)
    info = get_dataset(f"coco:{json_file}:{elsewhere}")
    assert {Path(r["file_name"]).parent for r in info.records} == {elsewhere}


@pytest.mark.parametrize("folder", ["test", "images"])
def test_coco_image_dir_guessed_beside_the_json(path_datasets, tmp_path, folder):
    """``D/test.json`` finds its images in ``D/test/`` (named after the json), else ``D/images/``."""
    json_file = Path(path_datasets.names["coco"]["test"].removeprefix("coco:"))
    shutil.copy(json_file, tmp_path / "test.json")
    shutil.copytree(json_file.parent.parent / "test", tmp_path / folder)
    info = get_dataset(f"coco:{tmp_path / 'test.json'}")
    assert {Path(r["file_name"]).parent for r in info.records} == {tmp_path / folder}


def test_coco_without_its_images_names_the_folders_tried(tmp_path):
    json_file = tmp_path / "annotations" / "instances_val.json"
    json_file.parent.mkdir()
    json_file.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png", "width": 4, "height": 4}],
                                     "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(FileNotFoundError) as e:
        get_dataset(f"coco:{json_file}")
    message = str(e.value)
    for folder in (tmp_path / "val", tmp_path / "annotations" / "instances_val", tmp_path / "annotations" / "images",
                   tmp_path / "annotations"):
        assert f"{folder}/" in message
    assert "'x.png'" in message and "coco:ANNOTATIONS.json:IMAGE_DIR" in message


def test_relative_paths_from_the_current_directory_then_the_datasets_root(path_datasets, tmp_path, monkeypatch):
    voc_root = Path(path_datasets.names["voc"]["train"].removeprefix("voc:").rpartition(":")[0])
    monkeypatch.chdir(voc_root.parent)
    from_cwd = get_dataset("voc:voc:train")  # the split is the text after the last ':'
    assert from_cwd.records[0]["file_name"].startswith(str(voc_root))
    monkeypatch.chdir(tmp_path)
    under_root = get_dataset("coco:coco/annotations/instances_train.json", root=voc_root.parent)
    assert len(under_root.records) == len(path_datasets.boxes["train"])
    with pytest.raises(FileNotFoundError) as e:
        get_dataset("voc:nowhere:train", root=tmp_path / "root")
    assert "VOC root folder 'nowhere'" in str(e.value)
    assert f"{tmp_path}/nowhere" in str(e.value) and f"{tmp_path}/root/nowhere" in str(e.value)


@pytest.mark.parametrize("name, hint", [
    ("voc:datasets/BCCD", "voc:ROOT:SPLIT"),
    ("voc::train", "voc:ROOT:SPLIT"),
    ("coco:", "coco:ANNOTATIONS.json"),
    ("coco:a.json:", "coco:ANNOTATIONS.json:IMAGE_DIR"),
    ("coco:/data/my:set/a.json:/data/images", "a path holds ':'"),
])
def test_malformed_names_show_the_form(name, hint):
    with pytest.raises(DatasetNotFoundError, match=hint):
        get_dataset(name)


def test_missing_voc_split_lists_the_splits_present(path_datasets):
    with pytest.raises(FileNotFoundError, match=r"splits present: \['test', 'train'\]"):
        get_dataset(path_datasets.names["voc"]["train"].rpartition(":")[0] + ":val")
