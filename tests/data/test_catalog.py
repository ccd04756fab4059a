"""The dataset catalog: name resolution, roots, registrations, caching and errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import od2
from od2.data import catalog
from od2.data.catalog import (
    DatasetNotFoundError,
    default_root,
    get_dataset,
    list_datasets,
    register_coco_instances,
    register_voc,
)
from od2.data.datasets.digits import load_digits_split


@pytest.fixture(autouse=True)
def isolated_catalog(monkeypatch):
    """Each test starts with no user registrations and an empty cache."""
    monkeypatch.setattr(catalog, "_registered", {})
    monkeypatch.setattr(catalog, "_cache", {})


def write_coco(
    path: Path, image_ids: list[int], categories=((1, "a"), (2, "b")), first_ann_id: int = 1
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 20, "width": 30} for i in image_ids]
    anns = [
        {"id": first_ann_id + k, "image_id": i, "category_id": categories[0][0], "bbox": [1, 1, 5, 5]}
        for k, i in enumerate(image_ids)
    ]
    cats = [{"id": c, "name": n} for c, n in categories]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def write_tiny_voc(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    box = "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
    obj = f"<object><name>WBC</name><bndbox>{box}</bndbox></object>"
    (root / "Annotations" / "i0.xml").write_text(
        f"<annotation><size><width>10</width><height>10</height></size>{obj}</annotation>"
    )
    for split in ("train", "val", "test", "trainval"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("i0\n")
    return root


def test_builtin_names_are_listed():
    names = list_datasets()
    for name in (
        *("coco_2014_train", "coco_2014_minival", "coco_2014_val", "coco_2017_train", "coco_2017_val"),
        *("bccd_train", "bccd_val", "bccd_test", "bccd_trainval", "digits_train", "digits_val"),
    ):
        assert name in names


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError) as e:
        get_dataset("coco_2017_vall")
    assert isinstance(e.value, DatasetNotFoundError)
    assert "unknown dataset 'coco_2017_vall'" in str(e.value) and "'coco_2017_val'" in str(e.value)


def test_root_defaults_to_env_then_datasets(monkeypatch, tmp_path):
    monkeypatch.delenv(catalog.DATASETS_ENV, raising=False)
    assert default_root() == Path("datasets")
    monkeypatch.setenv(catalog.DATASETS_ENV, str(tmp_path))
    assert default_root() == tmp_path
    write_coco(tmp_path / "coco" / "annotations" / "instances_val2017.json", [1, 2])
    (tmp_path / "coco" / "val2017").mkdir()
    info = get_dataset("coco_2017_val")
    assert info.name == "coco_2017_val" and len(info) == 2
    assert info.records[0]["file_name"] == str(tmp_path / "coco" / "val2017" / "1.jpg")


def test_missing_coco_file_names_dataset_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        get_dataset("coco_2014_minival", root=tmp_path)
    msg = str(e.value)
    expected = tmp_path / "coco" / "annotations" / "instances_minival2014.json"
    assert "coco_2014_minival" in msg and str(expected) in msg and str(tmp_path / "coco" / "val2014") in msg


def test_coco_2014_train_merges_train_and_valminusminival(tmp_path):
    ann = tmp_path / "coco" / "annotations"
    write_coco(ann / "instances_train2014.json", [1, 2, 3])
    write_coco(ann / "instances_valminusminival2014.json", [10, 11], first_ann_id=100)
    (tmp_path / "coco" / "train2014").mkdir()
    (tmp_path / "coco" / "val2014").mkdir()
    info = get_dataset("coco_2014_train", root=tmp_path)
    assert info.name == "coco_2014_train"
    assert [r["image_id"] for r in info.records] == [1, 2, 3, 10, 11]
    assert Path(info.records[3]["file_name"]).parent.name == "val2014"
    assert len(info.coco_gt["images"]) == 5 and len(info.coco_gt["annotations"]) == 5
    assert info.category_ids == [1, 2]


def test_coco_2014_train_rejects_disagreeing_categories(tmp_path):
    ann = tmp_path / "coco" / "annotations"
    write_coco(ann / "instances_train2014.json", [1])
    other_categories = ((1, "a"), (3, "c"))
    write_coco(ann / "instances_valminusminival2014.json", [10], other_categories, first_ann_id=100)
    (tmp_path / "coco" / "train2014").mkdir()
    (tmp_path / "coco" / "val2014").mkdir()
    with pytest.raises(ValueError, match="categories differ"):
        get_dataset("coco_2014_train", root=tmp_path)


def test_results_are_cached_per_name_and_root(tmp_path):
    for root in (tmp_path / "r1", tmp_path / "r2"):
        write_coco(root / "coco" / "annotations" / "instances_val2017.json", [1])
        (root / "coco" / "val2017").mkdir()
    first = get_dataset("coco_2017_val", root=tmp_path / "r1")
    assert get_dataset("coco_2017_val", root=tmp_path / "r1") is first
    assert get_dataset("coco_2017_val", root=tmp_path / "r2") is not first


def test_register_coco_instances(tmp_path):
    json_file = write_coco(tmp_path / "mine.json", [4, 5])
    (tmp_path / "images").mkdir()
    register_coco_instances("my_set", json_file, tmp_path / "images")
    assert "my_set" in list_datasets()
    info = get_dataset("my_set")
    assert info.name == "my_set" and len(info) == 2
    assert get_dataset("my_set", root=tmp_path / "elsewhere") is info
    with pytest.raises(ValueError, match="already registered"):
        register_coco_instances("my_set", json_file, tmp_path)
    with pytest.raises(ValueError, match="already registered"):
        register_coco_instances("coco_2017_val", json_file, tmp_path)


def test_registered_missing_file_names_dataset_and_path(tmp_path):
    register_coco_instances("gone", tmp_path / "nope.json", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dataset 'gone': .*nope\.json does not exist"):
        get_dataset("gone")


def test_register_voc(tmp_path):
    root = write_tiny_voc(tmp_path / "cells")
    register_voc("cells_train", root, "train", class_names=["RBC", "WBC"])
    info = get_dataset("cells_train")
    assert info.class_names == ["RBC", "WBC"] and info.records[0]["labels"].tolist() == [1]


def test_bccd_prefers_root_copy(tmp_path):
    write_tiny_voc(tmp_path / "bccd")
    info = get_dataset("bccd_val", root=tmp_path)
    assert len(info) == 1 and info.class_names == ["Platelets", "RBC", "WBC"]
    assert info.records[0]["file_name"].startswith(str(tmp_path / "bccd"))


def test_bccd_is_looked_up_under_the_root_only(tmp_path, monkeypatch):
    # A copy where a development checkout keeps the team's data, next to the package: the library must not use it.
    monkeypatch.setattr(od2, "__file__", str(tmp_path / "clone" / "od2" / "__init__.py"))
    write_tiny_voc(tmp_path / "shared" / "data" / "bccd")
    with pytest.raises(FileNotFoundError) as e:
        get_dataset("bccd_test", root=tmp_path / "data")
    assert str(tmp_path / "data" / "bccd") in str(e.value) and "shared" not in str(e.value)
    assert "OD2_DATASETS" in str(e.value)  # says how to point od2 at the data


def test_digits_generated_on_first_use(tmp_path, monkeypatch):
    small = functools.partial(load_digits_split, num_train=3, num_val=2)
    monkeypatch.setattr(catalog, "load_digits_split", small)
    info = get_dataset("digits_val", root=tmp_path)
    assert info.name == "digits_val" and len(info) == 2
    assert info.class_names == [str(d) for d in range(10)] and info.category_ids == list(range(1, 11))
    assert (tmp_path / "digits" / "val" / "000001.png").is_file()
