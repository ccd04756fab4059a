"""One class list for a config's train and test sets: derived from all splits or set by DATASETS.CLASS_NAMES,
datasets relabelled by class name, and warnings for classes with boxes on one side only."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from od2.config import ConfigError, load_config
from od2.data import catalog, class_list
from od2.data.setup import config_class_names, load_datasets


@pytest.fixture(autouse=True)
def isolated_catalog(monkeypatch):
    monkeypatch.setattr(catalog, "_cache", {})
    monkeypatch.setattr(class_list, "_warned", set())


def write_coco(folder: Path, categories: dict[int, str], boxes: list[int]) -> str:
    """A COCO json in ``folder`` with one 30x20 image per entry of ``boxes`` (its category id); returns its
    ``coco:`` name."""
    folder.mkdir(parents=True)
    images = [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 30} for i in range(1, len(boxes) + 1)]
    for image in images:
        Image.new("RGB", (30, 20)).save(folder / image["file_name"])
    annotations = [{"id": i, "image_id": i, "category_id": cid, "bbox": [1, 1, 5 + i, 5]}
                   for i, cid in enumerate(boxes, start=1)]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": c, "name": n} for c, n in categories.items()]}))
    return f"coco:{path}:{folder}"


def names_of_boxes(info) -> list[str]:
    """Class name of each box, by records (labels) and by coco_gt (category ids), which must agree."""
    by_label = [info.class_names[k] for r in info.records for k in r["labels"].tolist()]
    category = {c["id"]: c["name"] for c in info.coco_gt["categories"]}
    assert [category[a["category_id"]] for a in info.coco_gt["annotations"]] == by_label
    assert [category[c] for c in info.category_ids] == info.class_names
    return by_label


def test_train_and_test_share_the_union_of_their_classes(tmp_path, caplog):
    train = write_coco(tmp_path / "train", {1: "cat", 2: "dog"}, [1, 1, 2])
    test = write_coco(tmp_path / "test", {5: "dog", 9: "bird"}, [5, 9, 9])
    cfg = load_config(None, [f"DATASETS.TRAIN=['{train}']", f"DATASETS.TEST=['{test}']"])
    with caplog.at_level(logging.WARNING, logger="od2.data.class_list"):
        train_data = load_datasets(cfg.DATASETS.TRAIN, cfg)
        test_data = load_datasets(cfg.DATASETS.TEST, cfg, key="DATASETS.TEST")
    assert train_data.class_names == test_data.class_names == ["cat", "dog", "bird"]
    assert names_of_boxes(train_data) == ["cat", "cat", "dog"]
    assert names_of_boxes(test_data) == ["dog", "bird", "bird"]
    assert [r["labels"].tolist() for r in test_data.records] == [[1], [2], [2]]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # once, though both splits were loaded
    assert f"class 'cat' has 2 boxes in the training set ({train}) but none in test split {test}" in warnings[0]
    assert f"class 'bird' has 2 boxes in test split {test} but none in the training set ({train})" in warnings[1]


def test_equal_class_lists_keep_the_datasets_category_ids(tmp_path, caplog):
    train = write_coco(tmp_path / "train", {3: "cat", 7: "dog"}, [3, 7])
    test = write_coco(tmp_path / "test", {3: "cat", 7: "dog"}, [7, 3])
    cfg = load_config(None, [f"DATASETS.TRAIN=['{train}']", f"DATASETS.TEST=['{test}']"])
    with caplog.at_level(logging.WARNING):
        test_data = load_datasets(cfg.DATASETS.TEST, cfg, key="DATASETS.TEST")
    assert test_data.category_ids == [3, 7] and not caplog.records
    assert [a["category_id"] for a in test_data.coco_gt["annotations"]] == [7, 3]


def test_class_names_key_sets_the_order(tmp_path, caplog):
    train = write_coco(tmp_path / "train", {1: "cat", 2: "dog"}, [1, 2, 2])
    cfg = load_config(None, [f"DATASETS.TRAIN=['{train}']", f"DATASETS.TEST=['{train}']",
                             "DATASETS.CLASS_NAMES=[dog, fox, cat]"])
    with caplog.at_level(logging.WARNING, logger="od2.data.class_list"):
        data = load_datasets(cfg.DATASETS.TRAIN, cfg)
    assert data.class_names == ["dog", "fox", "cat"]
    assert names_of_boxes(data) == ["cat", "dog", "dog"]
    assert [r["labels"].tolist() for r in data.records] == [[2], [0], [0]]
    assert [r.getMessage() for r in caplog.records] == [
        f"class 'fox' of the class list has no box in the training set ({train}) nor in the test sets: the model "
        "has an output it never learns"]


def test_a_class_the_key_lacks_is_an_error_naming_it(tmp_path):
    train = write_coco(tmp_path / "train", {1: "cat", 2: "dog"}, [1, 2, 2])
    cfg = load_config(None, [f"DATASETS.TRAIN=['{train}']", "DATASETS.TEST=[]", "DATASETS.CLASS_NAMES=[cat]"])
    with pytest.raises(ValueError, match=rf"dataset '{train}': class 'dog' \(2 boxes\) is not in the class list "
                                         r"\['cat'\] \(DATASETS.CLASS_NAMES\)"):
        load_datasets(cfg.DATASETS.TRAIN, cfg)


def test_class_names_key_is_checked():
    with pytest.raises(ConfigError, match="DATASETS.CLASS_NAMES"):
        load_config(None, ["DATASETS.CLASS_NAMES=[1, 2]"])
    cfg = load_config(None, ["DATASETS.CLASS_NAMES=[cat, cat]", "DATASETS.TRAIN=[]", "DATASETS.TEST=[]"])
    with pytest.raises(ConfigError, match="DATASETS.CLASS_NAMES lists 'cat' twice"):
        config_class_names(cfg)


def test_a_training_set_not_on_disk_is_left_out_of_the_class_list(tmp_path, caplog):
    """``od2 eval`` where only the test set is present."""
    test = write_coco(tmp_path / "test", {1: "cat", 2: "dog"}, [1, 2])
    cfg = load_config(None, [f"DATASETS.TRAIN=['voc:{tmp_path}/absent:train']", f"DATASETS.TEST=['{test}']"])
    with caplog.at_level(logging.WARNING):
        data = load_datasets(cfg.DATASETS.TEST, cfg, key="DATASETS.TEST")
    assert data.class_names == ["cat", "dog"]
    left_out = f"leaves out dataset voc:{tmp_path}/absent:train, which cannot be loaded"
    assert any(left_out in r.getMessage() for r in caplog.records)


def test_separate_voc_folders_for_train_and_test(path_datasets, tmp_path, caplog):
    """The held-out case: a training VOC folder and a test VOC folder that lacks one of its classes and has one of
    its own, both named by path."""
    voc = path_datasets.root / "voc"
    train_root, test_root = tmp_path / "train_voc", tmp_path / "test_voc"
    shutil.copytree(voc, train_root)
    shutil.copytree(voc, test_root)
    xml = test_root / "Annotations" / "c.xml"
    xml.write_text(xml.read_text().replace("<name>cat</name>", "<name>bird</name>"))
    for stem in ("a", "b"):  # the test folder holds only its test split
        (test_root / "Annotations" / f"{stem}.xml").unlink()
    (test_root / "ImageSets" / "Main" / "train.txt").unlink()
    cfg = load_config(None, [f"DATASETS.TRAIN=['voc:{train_root}:train']", f"DATASETS.TEST=['voc:{test_root}:test']"])
    with caplog.at_level(logging.WARNING, logger="od2.data.class_list"):
        test_data = load_datasets(cfg.DATASETS.TEST, cfg, key="DATASETS.TEST")
    assert test_data.class_names == ["cat", "dog", "bird"]  # the training folder's sorted names, then the new one
    assert sorted(names_of_boxes(test_data)) == ["bird", "dog"]
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert f"class 'bird' has 1 box in test split voc:{test_root}:test but none in the training set" in messages
    assert f"class 'cat' has 2 boxes in the training set (voc:{train_root}:train) but none in test split" in messages
