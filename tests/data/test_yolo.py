"""YOLO txt datasets: data.yaml parsing, label files, errors, clipping, and ``yolo:`` names in the catalog."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from od2.data import catalog
from od2.data.catalog import DatasetNotFoundError, get_dataset, register_yolo
from od2.data.datasets.yolo import label_path_for, load_yolo


@pytest.fixture(autouse=True)
def isolated_catalog(monkeypatch):
    monkeypatch.setattr(catalog, "_registered", {})
    monkeypatch.setattr(catalog, "_cache", {})


def write_image(path: Path, width: int, height: int, color=(10, 20, 30), **save_kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).save(path, **save_kwargs)
    return path


def write_labels(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def yolo_root(tmp_path) -> Path:
    """images/train: a.jpg 100x50 (two boxes), b.png 64x64 (no label file), c.jpg 40x80 (one box past the edges),
    d.jpg 30x30 (empty label file); names cat, dog, bird."""
    root = tmp_path / "pets"
    write_image(root / "images/train/a.jpg", 100, 50)
    write_image(root / "images/train/b.png", 64, 64)
    write_image(root / "images/train/c.jpg", 40, 80)
    write_image(root / "images/train/d.jpg", 30, 30)
    write_labels(root, "labels/train/a.txt", "0 0.25 0.5 0.3 0.4\n\n1 0.5125 0.33 0.123 0.21\n")
    write_labels(root, "labels/train/c.txt", "2 0.5 0.5 0.5 0.25\n0 0.9 0.1 0.4 0.4\n")
    write_labels(root, "labels/train/d.txt", "")
    (root / "data.yaml").write_text("train: images/train\nnames: [cat, dog, bird]\n")
    return root


def test_boxes_sizes_and_labels_against_hand_computed_pixels(yolo_root):
    info = load_yolo(yolo_root / "data.yaml", "train")
    assert info.name == "pets_train"
    assert info.class_names == ["cat", "dog", "bird"] and info.category_ids == [1, 2, 3]
    a, b, c, d = info.records
    assert [Path(r["file_name"]).name for r in info.records] == ["a.jpg", "b.png", "c.jpg", "d.jpg"]
    assert Path(a["file_name"]).is_absolute()
    assert [(r["image_id"], r["width"], r["height"]) for r in info.records] == [
        (1, 100, 50), (2, 64, 64), (3, 40, 80), (4, 30, 30)
    ]
    # a: cx 25, cy 25, w 30, h 20; cx 51.25, cy 16.5, w 12.3, h 10.5.
    np.testing.assert_allclose(a["boxes"], [[10, 15, 40, 35], [45.1, 11.25, 57.4, 21.75]], atol=1e-4)
    assert a["boxes"].dtype == np.float32 and a["labels"].tolist() == [0, 1]
    assert a["iscrowd"].dtype == bool and not a["iscrowd"].any()
    # c (40 wide, 80 high): cx 20, cy 40, w 20, h 20; the second box spans x 28..44, y -8..24 and is clipped.
    np.testing.assert_allclose(c["boxes"], [[10, 30, 30, 50], [28, 0, 40, 24]], atol=1e-4)
    assert c["labels"].tolist() == [2, 0]
    assert b["boxes"].shape == (0, 4) and d["boxes"].shape == (0, 4)  # no label file / empty label file
    assert info.skipped == {"clipped_box": 1, "degenerate_box": 0}
    gt = info.coco_gt
    assert len(gt["images"]) == 4 and len(gt["annotations"]) == 4
    assert [cat["name"] for cat in gt["categories"]] == ["cat", "dog", "bird"]
    assert gt["annotations"][0]["bbox"] == pytest.approx([10, 15, 30, 20], abs=1e-4)


def test_label_path_replaces_the_last_images_component():
    assert label_path_for("/d/images/x/images/train/a.b.jpg") == Path("/d/images/x/labels/train/a.b.txt")
    assert label_path_for("/d/pics/a.png") == Path("/d/pics/a.txt")
    assert label_path_for("/d/images/images.jpg") == Path("/d/labels/images.txt")


def test_box_touching_the_edge_is_not_counted_as_clipped(tmp_path):
    write_image(tmp_path / "images/a.jpg", 100, 60)
    # The last box is a full-width box whose width was rounded up by the tool that wrote it.
    write_labels(tmp_path, "labels/a.txt", "0 0.95 0.9 0.1 0.2\n0 0.05 0.1 0.1 0.2\n0 0.5 0.5 1.0000001 0.2\n")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [x]\n")
    info = load_yolo(tmp_path / "data.yaml", "train")
    np.testing.assert_allclose(info.records[0]["boxes"], [[90, 48, 100, 60], [0, 0, 10, 12], [0, 24, 100, 36]],
                               atol=1e-4)
    assert info.skipped == {"clipped_box": 0, "degenerate_box": 0}


def test_out_of_range_boxes_are_clipped_or_dropped_and_counted(tmp_path):
    write_image(tmp_path / "images/a.jpg", 100, 100)
    lines = [
        "0 1.2 0.5 0.2 0.2",  # entirely right of the image: dropped
        "0 0.5 0.5 0 0.2",  # zero width: dropped
        "0 -0.05 0.5 0.3 0.2",  # left edge at -0.2: clipped
        "0 0.5 0.5 0.2 1.5",  # taller than the image: clipped
        "0 0.5 0.5 0.2 0.2",  # fine
    ]
    write_labels(tmp_path, "labels/a.txt", "\n".join(lines))
    (tmp_path / "data.yaml").write_text("train: images\nnames: [x]\n")
    info = load_yolo(tmp_path / "data.yaml", "train")
    np.testing.assert_allclose(info.records[0]["boxes"], [[0, 40, 10, 60], [40, 0, 60, 100], [40, 40, 60, 60]],
                               atol=1e-4)
    assert info.skipped == {"clipped_box": 2, "degenerate_box": 2}


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("0 0.5 0.5 0.2", "4 fields"),
        ("0 0.5 0.5 0.2 0.2 0.9", "6 fields"),
        ("0 0.5 abc 0.2 0.2", "non-numeric"),
        ("0 0.5 nan 0.2 0.2", "non-finite"),
        ("3 0.5 0.5 0.2 0.2", "class id '3' is not one of the 2 classes 0..1"),
        ("-1 0.5 0.5 0.2 0.2", "class id '-1'"),
        ("1.5 0.5 0.5 0.2 0.2", "class id '1.5'"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path, line, match):
    write_image(tmp_path / "images/a.jpg", 10, 10)
    label = write_labels(tmp_path, "labels/a.txt", f"0 0.5 0.5 0.2 0.2\n\n{line}\n")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [x, y]\n")
    with pytest.raises(ValueError) as e:
        load_yolo(tmp_path / "data.yaml", "train")
    assert f"{label}:3: " in str(e.value) and match in str(e.value)


def test_segmentation_polygon_becomes_its_bounding_box(tmp_path):
    write_image(tmp_path / "images/a.jpg", 100, 50)
    write_labels(tmp_path, "labels/a.txt", "1 0.1 0.2 0.5 0.1 0.3 0.8\n")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [x, y]\n")
    record = load_yolo(tmp_path / "data.yaml", "train").records[0]
    np.testing.assert_allclose(record["boxes"], [[10, 5, 50, 40]], atol=1e-4)
    assert record["labels"].tolist() == [1]


@pytest.mark.parametrize(
    "names_yaml",
    ["names: [cat, dog, bird]", "names: {0: cat, 1: dog, 2: bird}", "names: {'2': bird, '0': cat, '1': dog}\nnc: 3"],
)
def test_names_as_list_or_dict(yolo_root, names_yaml):
    (yolo_root / "data.yaml").write_text(f"train: images/train\n{names_yaml}\n")
    info = load_yolo(yolo_root / "data.yaml", "train")
    assert info.class_names == ["cat", "dog", "bird"]
    assert info.records[2]["labels"].tolist() == [2, 0]


@pytest.mark.parametrize(
    ("names_yaml", "match"),
    [
        ("names: [a, b]\nnc: 3", "'nc' is 3 but 'names' has 2 entries"),
        ("names: {0: a, 2: b}", r"keys must be the class indices 0..1, got \[0, 2\]"),
        ("names: {zero: a}", "key 'zero' is not a class index"),
        ("names: cat", "expected a list"),
        ("nc: 2", None),  # names generated: class0, class1
        ("path: .", "no 'names'"),
    ],
)
def test_names_and_nc_checks(tmp_path, names_yaml, match):
    write_image(tmp_path / "images/a.jpg", 10, 10)
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(f"train: images\n{names_yaml}\n")
    if match is None:
        assert load_yolo(data_yaml, "train").class_names == ["class0", "class1"]
        return
    with pytest.raises(ValueError, match=match) as e:
        load_yolo(data_yaml, "train")
    assert str(data_yaml) in str(e.value)


def test_path_key_and_txt_image_list(yolo_root):
    (yolo_root / "lists").mkdir()
    (yolo_root / "lists" / "val.txt").write_text("../images/train/c.jpg\n./../images/train/a.jpg\n\n")
    sub = yolo_root / "cfg"
    sub.mkdir()
    (sub / "data.yaml").write_text("path: ..\nval: lists/val.txt\nnames: [cat, dog, bird]\n")
    info = load_yolo(sub / "data.yaml", "val")
    assert [Path(r["file_name"]).name for r in info.records] == ["c.jpg", "a.jpg"]  # list order kept
    assert info.records[1]["labels"].tolist() == [0, 1]
    (yolo_root / "lists" / "val.txt").write_text("../images/train/c.jpg\nmissing.jpg\n")
    with pytest.raises(FileNotFoundError, match=r"val\.txt:2: image 'missing\.jpg' not found"):
        load_yolo(sub / "data.yaml", "val")


def test_unknown_split_missing_folder_and_bad_yaml(yolo_root):
    data_yaml = yolo_root / "data.yaml"
    with pytest.raises(ValueError, match=r"no split 'val' \(splits present: \['train'\]\)"):
        load_yolo(data_yaml, "val")
    data_yaml.write_text("train: images/nowhere\nnames: [a]\n")
    with pytest.raises(FileNotFoundError, match="images/nowhere"):
        load_yolo(data_yaml, "train")
    data_yaml.write_text("train: [images/train\n")
    with pytest.raises(ValueError, match=f"{data_yaml}: not valid YAML"):
        load_yolo(data_yaml, "train")
    with pytest.raises(FileNotFoundError, match="nope.yaml does not exist"):
        load_yolo(yolo_root / "nope.yaml", "train")


def test_unreadable_image_is_left_out_and_named(yolo_root):
    bad = yolo_root / "images/train/e.jpg"
    bad.write_bytes(b"not an image")
    info = load_yolo(yolo_root / "data.yaml", "train")
    assert str(bad) not in [r["file_name"] for r in info.records] and info.skipped["unreadable_image"] == 1
    assert list(info.unreadable_images) == [str(bad)]
    assert "cannot identify image file" in info.unreadable_images[str(bad)]
    assert len(info.coco_gt["images"]) == len(info.records)


def test_exif_orientation_is_ignored_like_image_io_and_warned(tmp_path, caplog):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    write_image(tmp_path / "images/a.jpg", 100, 50, exif=exif)
    write_labels(tmp_path, "labels/a.txt", "0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [x]\n")
    with caplog.at_level(logging.WARNING):
        info = load_yolo(tmp_path / "data.yaml", "train")
    record = info.records[0]
    assert (record["width"], record["height"]) == (100, 50)  # stored order, as od2.data.image_io decodes
    np.testing.assert_allclose(record["boxes"], [[40, 20, 60, 30]], atol=1e-4)
    assert "1 images carry an EXIF orientation" in caplog.text


# ----------------------------------------------------------------------------- catalog


def test_yolo_names_through_get_dataset(yolo_root, tmp_path, monkeypatch):
    data_yaml = yolo_root / "data.yaml"
    name = f"yolo:{data_yaml}:train"
    info = get_dataset(name)
    assert info.name == name and len(info.records) == 4 and info.class_names == ["cat", "dog", "bird"]
    assert get_dataset(name) is info  # cached
    monkeypatch.chdir(tmp_path)
    relative = get_dataset("yolo:pets/data.yaml:train")  # relative to the current directory
    assert [r["file_name"] for r in relative.records] == [r["file_name"] for r in info.records]
    monkeypatch.chdir(yolo_root / "images")
    under_root = get_dataset("yolo:pets/data.yaml:train", root=tmp_path)  # else under the datasets root
    assert len(under_root.records) == 4


def test_yolo_name_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        get_dataset(f"yolo:{tmp_path}/missing/data.yaml:train")
    assert f"{tmp_path}/missing/data.yaml" in str(e.value) and "yolo:PATH/data.yaml:SPLIT" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="yolo:PATH/data.yaml:SPLIT"):
        get_dataset("yolo:data.yaml")


def test_register_yolo(yolo_root, tmp_path):
    register_yolo("pets_train", yolo_root / "data.yaml", "train")
    assert "pets_train" in catalog.list_datasets()
    info = get_dataset("pets_train")
    assert info.name == "pets_train" and len(info.records) == 4
    with pytest.raises(ValueError, match="already registered"):
        register_yolo("pets_train", yolo_root / "data.yaml", "train")
    register_yolo("gone", tmp_path / "gone.yaml", "train")
    with pytest.raises(FileNotFoundError, match="gone.yaml does not exist"):
        get_dataset("gone")
