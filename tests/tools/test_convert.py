"""Conversion between COCO, VOC and YOLO: round trips, ids, crowd flags, name clashes, the CLI, BCCD."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from od2.cli import main
from od2.data.datasets.voc import load_voc
from od2.data.records import DatasetInfo
from od2.tools.convert import (
    coco_output_paths,
    read_dataset,
    write_coco,
    write_dataset,
    write_voc,
    write_yolo,
)

BCCD_CLASSES = ["Platelets", "RBC", "WBC"]


def write_image(path: Path, width: int, height: int, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).save(path)


def source_coco(tmp_path: Path, crowd: bool = False) -> Path:
    """A COCO json over 5 images: a.jpg 100x50 (3 boxes), b.png 64x64 (no boxes), c.jpg 40x80 (non-square),
    d.jpg 200x120, and a second a.jpg (30x30) in another folder. Category ids 3 (cat), 7 (dog), 9 (bird):
    bird only appears in c. Coordinates are non-integers."""
    src = tmp_path / "src"
    files = [("imgs/a.jpg", 100, 50), ("imgs/b.png", 64, 64), ("imgs/c.jpg", 40, 80), ("imgs/d.jpg", 200, 120),
             ("more/a.jpg", 30, 30)]
    images = []
    for i, (rel, w, h) in enumerate(files):
        write_image(src / rel, w, h, (40 * i, 255 - 30 * i, 7 * i))  # distinct contents
        images.append({"id": 10 + i, "file_name": rel, "width": w, "height": h})
    anns = [
        (10, 3, [10.25, 5.5, 20.125, 10.75]),
        (10, 7, [0, 0, 33.3, 17.77]),
        (10, 3, [60, 20, 40, 30]),  # touches the right and bottom edges
        (12, 9, [1.5, 2.25, 30.5, 70.125]),
        (12, 3, [5, 5, 10, 10]),
        (13, 7, [123.456, 78.9, 50.5, 41.1]),
        (14, 7, [2.2, 3.3, 4.4, 5.5]),
    ]
    annotations = [
        {"id": k + 1, "image_id": im, "category_id": cat, "bbox": bbox, "iscrowd": int(crowd and k == 1)}
        for k, (im, cat, bbox) in enumerate(anns)
    ]
    categories = [{"id": 3, "name": "cat", "supercategory": "animal"}, {"id": 7, "name": "dog"},
                  {"id": 9, "name": "bird"}]
    json_file = src / "instances.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_file


def digest(path: str) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def assert_same_dataset(a: DatasetInfo, b: DatasetInfo, drop_crowd_from_a: bool = False) -> None:
    """Same class names and, per image (matched by file contents), size, boxes (1e-3 px), labels and crowd flags."""
    assert b.class_names == a.class_names
    by_digest = {digest(r["file_name"]): r for r in b.records}
    assert len(b.records) == len(a.records) == len(by_digest)
    for ra in a.records:
        rb = by_digest[digest(ra["file_name"])]
        assert (rb["width"], rb["height"]) == (ra["width"], ra["height"])
        keep = ~ra["iscrowd"] if drop_crowd_from_a else np.ones(len(ra["boxes"]), dtype=bool)
        np.testing.assert_allclose(rb["boxes"], ra["boxes"][keep], atol=1e-3, rtol=0)
        assert rb["labels"].tolist() == ra["labels"][keep].tolist()
        assert rb["iscrowd"].tolist() == ra["iscrowd"][keep].tolist()


def read_written(fmt: str, out: Path, split: str) -> DatasetInfo:
    if fmt == "coco":
        json_file, image_dir = coco_output_paths(out, split)
        return read_dataset("coco", json_file, image_root=image_dir)
    return read_dataset(fmt, out, split=split)


def test_source_fixture_loads(tmp_path):
    info = read_dataset("coco", source_coco(tmp_path))
    assert info.class_names == ["cat", "dog", "bird"] and info.category_ids == [3, 7, 9]
    assert [len(r["boxes"]) for r in info.records] == [3, 0, 2, 1, 1]
    assert info.skipped == {"clipped_box": 0, "degenerate_box": 0}


@pytest.mark.parametrize("chain", list(itertools.permutations(["coco", "voc", "yolo"])))
def test_round_trip_through_all_formats(tmp_path, chain):
    """start -> f2 -> f3 -> start keeps every image and box, for all six orders."""
    source = read_dataset("coco", source_coco(tmp_path))
    current = source
    for step, fmt in enumerate([*chain, chain[0]]):
        out = tmp_path / f"step{step}_{fmt}"
        summary = write_dataset(current, fmt, out, "train")
        assert (summary.num_images, summary.num_boxes) == (5, 7)
        assert summary.renamed == (1 if step == 0 else 0)  # more/a.jpg clashes with imgs/a.jpg once
        current = read_written(fmt, out, "train")
        assert_same_dataset(source, current)
        assert current.skipped == {"clipped_box": 0, "degenerate_box": 0}
    # Every chain passes through VOC or YOLO, which renumber category ids 1..K.
    assert current.category_ids == [1, 2, 3]


def test_coco_writer_keeps_category_and_image_ids_and_supercategory(tmp_path):
    source = read_dataset("coco", source_coco(tmp_path))
    out_json = tmp_path / "out" / "x.json"
    summary = write_coco(source, out_json)  # no image folder: absolute file names, nothing copied
    assert summary.image_files == {"referenced": 5}
    data = json.loads(out_json.read_text())
    assert [c["id"] for c in data["categories"]] == [3, 7, 9]
    assert data["categories"][0]["supercategory"] == "animal"
    assert [im["id"] for im in data["images"]] == [10, 11, 12, 13, 14]
    assert Path(data["images"][0]["file_name"]).is_absolute()
    back = read_dataset("coco", out_json, image_root=tmp_path / "elsewhere")
    assert back.category_ids == [3, 7, 9]
    assert_same_dataset(source, back)


def test_voc_coordinates_are_one_based_and_integral_when_possible(tmp_path):
    source = read_dataset("coco", source_coco(tmp_path))
    write_voc(source, tmp_path / "voc", "train")
    xml = (tmp_path / "voc" / "Annotations" / "a.xml").read_text()
    # bbox [10.25, 5.5, 20.125, 10.75] -> xmin 11.25, ymin 6.5, xmax 30.375, ymax 16.25;
    # bbox [60, 20, 40, 30] -> 61 21 100 50
    assert "<xmin>11.25</xmin>" in xml and "<ymin>6.5</ymin>" in xml and "<xmax>30.375</xmax>" in xml
    assert "<xmin>61</xmin>" in xml and "<ymin>21</ymin>" in xml and "<xmax>100</xmax>" in xml
    assert "<ymax>50</ymax>" in xml and "<filename>a.jpg</filename>" in xml
    assert "<width>100</width>" in xml and "<height>50</height>" in xml
    assert (tmp_path / "voc" / "class_names.txt").read_text() == "cat\ndog\nbird\n"
    assert (tmp_path / "voc" / "ImageSets/Main/train.txt").read_text() == "a\nb\nc\nd\na_1\n"
    # od2's VOC loader reads class_names.txt (without it, it sorts the names it finds): the file keeps the order.
    assert load_voc(tmp_path / "voc", "train").class_names == ["cat", "dog", "bird"]
    (tmp_path / "voc" / "class_names.txt").unlink()
    assert load_voc(tmp_path / "voc", "train").class_names == ["bird", "cat", "dog"]


def test_name_clash_renames_instead_of_overwriting(tmp_path):
    source = read_dataset("coco", source_coco(tmp_path))
    summary = write_yolo(source, tmp_path / "y", "train")
    assert summary.renamed == 1
    images = tmp_path / "y" / "images" / "train"
    assert sorted(p.name for p in images.iterdir()) == ["a.jpg", "a_1.jpg", "b.png", "c.jpg", "d.jpg"]
    assert digest(images / "a.jpg") == digest(source.records[0]["file_name"])
    assert digest(images / "a_1.jpg") == digest(source.records[4]["file_name"])
    assert (tmp_path / "y" / "labels" / "train" / "b.txt").read_text() == ""  # image without boxes


def test_crowd_maps_to_difficult_and_is_dropped_for_yolo(tmp_path, caplog):
    source = read_dataset("coco", source_coco(tmp_path, crowd=True))
    assert source.records[0]["iscrowd"].tolist() == [False, True, False]
    write_voc(source, tmp_path / "voc", "train")
    assert "<difficult>1</difficult>" in (tmp_path / "voc" / "Annotations" / "a.xml").read_text()
    assert_same_dataset(source, read_dataset("voc", tmp_path / "voc", "train"))  # difficult -> iscrowd
    with caplog.at_level(logging.WARNING):
        summary = write_yolo(source, tmp_path / "y", "train")
    assert summary.dropped == {"crowd_box": 1} and summary.num_boxes == 6
    assert "dropped 1 crowd/difficult boxes" in caplog.text
    assert_same_dataset(source, read_dataset("yolo", tmp_path / "y", "train"), drop_crowd_from_a=True)
    kept = write_yolo(source, tmp_path / "y2", "train", keep_crowd=True)
    assert kept.dropped == {} and kept.num_boxes == 7
    back = read_dataset("yolo", tmp_path / "y2", "train")
    assert sum(len(r["boxes"]) for r in back.records) == 7 and not any(r["iscrowd"].any() for r in back.records)


def test_tiny_boxes_are_flagged_for_voc(tmp_path):
    json_file = source_coco(tmp_path)
    data = json.loads(json_file.read_text())
    data["annotations"][0]["bbox"] = [10, 10, 0.5, 8]
    json_file.write_text(json.dumps(data))
    summary = write_voc(read_dataset("coco", json_file), tmp_path / "voc", "train")
    assert summary.warnings == {"box_at_most_1px": 1}
    assert read_dataset("voc", tmp_path / "voc", "train").skipped["degenerate_box"] == 1  # counted, not silent


def test_existing_outputs_missing_images_and_links(tmp_path):
    source = read_dataset("coco", source_coco(tmp_path))
    write_yolo(source, tmp_path / "y", "train")
    with pytest.raises(FileExistsError, match="output files exist already"):
        write_yolo(source, tmp_path / "y", "train")
    write_yolo(source, tmp_path / "y", "train", overwrite=True)
    write_yolo(source, tmp_path / "y", "val", link="hardlink")  # a second split in the same root
    data_yaml = (tmp_path / "y" / "data.yaml").read_text()
    assert "train: images/train" in data_yaml and "val: images/val" in data_yaml
    assert len(read_dataset("yolo", tmp_path / "y", "val").records) == 5
    summary = write_voc(source, tmp_path / "v", "train", link="symlink")
    assert summary.image_files == {"symlinked": 5}
    assert (tmp_path / "v" / "JPEGImages" / "a.jpg").is_symlink()
    renamed = DatasetInfo("x", source.records, ["a", "b", "c"], [1, 2, 3], source.coco_gt)
    with pytest.raises(ValueError, match="lists classes"):
        write_voc(renamed, tmp_path / "v", "val")
    Path(source.records[2]["file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image files do not exist, e\.g\. .*c\.jpg"):
        write_voc(source, tmp_path / "v2", "train")
    assert not (tmp_path / "v2").exists()  # nothing written


# ----------------------------------------------------------------------------- CLI


def test_cli_convert_round_trip(tmp_path, capsys):
    json_file = source_coco(tmp_path)
    source = read_dataset("coco", json_file)
    rc = main(["data", "convert", "--from", "coco", "--input", str(json_file), "--images", str(tmp_path / "src"),
               "--split", "train", "--to", "yolo", "--out", str(tmp_path / "y")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "wrote YOLO" in out and "before (coco" in out and "5 images, 7 boxes, 3 classes" in out
    assert "after  (read back" in out and "1 renamed" in out
    assert main(["data", "convert", "--from", "yolo", "--input", str(tmp_path / "y" / "data.yaml"),
                 "--split", "train", "--to", "voc", "--out", str(tmp_path / "v"), "--link"]) == 0
    out = capsys.readouterr().out
    assert "5 hardlinked" in out or "5 copied" in out  # copied where the file system refuses hard links
    assert main(["data", "convert", "--from", "voc", "--input", str(tmp_path / "v"), "--split", "train",
                 "--to", "coco", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    json_out, image_dir = coco_output_paths(tmp_path / "c", "train")
    assert json_out.is_file() and image_dir.is_dir()
    assert_same_dataset(source, read_dataset("coco", json_out))  # the default image root is c/train/


def test_cli_convert_errors(tmp_path, capsys):
    json_file = source_coco(tmp_path)
    args = ["data", "convert", "--from", "coco", "--input", str(json_file), "--images", str(tmp_path / "src"),
            "--to", "voc", "--out", str(tmp_path / "v")]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "od2 data convert: error:" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    write_image(bad / "images" / "x.jpg", 10, 10, (0, 0, 0))
    (bad / "labels").mkdir()
    (bad / "labels" / "x.txt").write_text("0 0.5 0.5 0.5\n")
    (bad / "data.yaml").write_text("train: images\nnames: [a]\n")
    capsys.readouterr()
    assert main(["data", "convert", "--from", "yolo", "--input", str(bad), "--to", "coco", "--out",
                 str(tmp_path / "c")]) == 2
    assert f"{bad / 'labels' / 'x.txt'}:1: 4 fields" in capsys.readouterr().err
    assert main(["data", "convert", "--from", "coco", "--to", "voc", "--out", "x"]) == 2
    assert "--input PATH is required with --from" in capsys.readouterr().err
    assert main(["data", "convert", "--to", "voc", "--out", "x"]) == 2
    assert "--dataset NAME, or --from FORMAT with --input PATH" in capsys.readouterr().err


# ----------------------------------------------------------------------------- BCCD


def test_bccd_voc_to_yolo_to_coco_keeps_per_class_counts(tmp_path, bccd_datasets_root):
    original = load_voc(bccd_datasets_root / "bccd", "trainval", class_names=BCCD_CLASSES)
    write_yolo(original, tmp_path / "y", "trainval", link="symlink")
    yolo = read_dataset("yolo", tmp_path / "y", "trainval")
    write_dataset(yolo, "coco", tmp_path / "c", "trainval", link="symlink")
    coco = read_written("coco", tmp_path / "c", "trainval")

    def per_class(info: DatasetInfo) -> list[int]:
        return np.bincount(np.concatenate([r["labels"] for r in info.records]), minlength=3).tolist()

    assert coco.class_names == BCCD_CLASSES
    assert per_class(coco) == per_class(yolo) == per_class(original)
    assert len(coco.records) == len(original.records)
    assert_same_dataset(original, coco)
