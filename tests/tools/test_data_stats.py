"""Dataset statistics: hand counts, COCO size-bucket boundaries, the text table and ``od2 data stats``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from od2.cli import main
from od2.data import catalog
from od2.data.records import DatasetInfo, make_record
from od2.tools.stats import dataset_stats, format_stats


@pytest.fixture(autouse=True)
def isolated_catalog(monkeypatch):
    monkeypatch.setattr(catalog, "_registered", {})
    monkeypatch.setattr(catalog, "_cache", {})


def box(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y + h]


def hand_dataset() -> DatasetInfo:
    """4 images, classes a/b/c (c has no boxes at all); areas around the 32^2 and 96^2 boundaries."""
    records = [
        make_record("/d/1.jpg", 1, 200, 300, [box(0, 0, 32, 32), box(1, 1, 31.9, 32), box(0, 0, 96, 96)],
                    [0, 0, 1], [False, True, False]),
        make_record("/d/2.jpg", 2, 480, 640, [box(0.5, 0.5, 95.9, 96), box(0, 0, 16, 64), box(0, 0, 100, 100)],
                    [1, 1, 0], [False, False, False]),
        make_record("/d/3.jpg", 3, 100, 50, [], [], []),  # no boxes
        make_record("/d/4.jpg", 4, 50, 100, [box(2, 2, 8.5, 3.25)], [0], [True]),
    ]
    return DatasetInfo("hand", records, ["a", "b", "c"], [5, 6, 8], {}, {"clipped_box": 2, "degenerate_box": 0})


def test_counts_against_hand_counts():
    stats = dataset_stats(hand_dataset())
    assert stats["num_images"] == 4 and stats["num_images_without_boxes"] == 1
    assert stats["num_boxes"] == 7 and stats["num_crowd"] == 2
    a, b, c = stats["classes"]
    assert (a["name"], a["category_id"], a["images"], a["boxes"], a["crowd"]) == ("a", 5, 3, 4, 2)
    assert (b["name"], b["category_id"], b["images"], b["boxes"], b["crowd"]) == ("b", 6, 2, 3, 0)
    assert (c["images"], c["boxes"], c["crowd"]) == (0, 0, 0)
    assert stats["image_width"] == {"min": 50, "max": 640} and stats["image_height"] == {"min": 50, "max": 480}
    assert stats["skipped"] == {"clipped_box": 2, "degenerate_box": 0}
    json.dumps(stats)  # plain types only


def test_size_buckets_follow_coco_boundaries():
    stats = dataset_stats(hand_dataset())
    a, b, c = stats["classes"]
    # a: 32*32 = 32^2 -> medium (not < 32^2); 31.9*32 -> small; 100*100 -> large; 8.5*3.25 -> small.
    assert a["sizes"] == {"small": 2, "medium": 1, "large": 1}
    # b: 96*96 = 96^2 -> large (not < 96^2); 95.9*96 -> medium; 16*64 = 1024 = 32^2 -> medium.
    assert b["sizes"] == {"small": 0, "medium": 2, "large": 1}
    assert c["sizes"] == {"small": 0, "medium": 0, "large": 0}
    assert stats["sizes"] == {"small": 2, "medium": 3, "large": 2}


def test_empty_dataset():
    stats = dataset_stats(DatasetInfo("empty", [], ["x"], [1], {}))
    assert stats["num_images"] == 0 and stats["num_boxes"] == 0 and stats["image_width"] is None
    assert "0 images" in format_stats(stats)


def test_text_table():
    text = format_stats(dataset_stats(hand_dataset()))
    lines = text.splitlines()
    assert lines[0] == "dataset hand: 4 images (1 without boxes), 7 boxes (2 crowd/difficult), 3 classes"
    assert "width 50..640, height 50..480" in text and "clipped_box 2" in text
    row = {line.split()[1]: line.split() for line in lines if line.split()[:1] in (["0"], ["1"], ["2"])}
    assert row["a"] == ["0", "a", "5", "3", "4", "2", "2", "1", "1"]
    assert row["c"] == ["2", "c", "8", "0", "0", "0", "0", "0", "0"]
    assert lines[-1].split() == ["total", "4", "7", "2", "2", "3", "2"]


# ----------------------------------------------------------------------------- CLI


def write_yolo_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (100, 50)).save(root / "images" / "a.jpg")
    Image.new("RGB", (64, 64)).save(root / "images" / "b.jpg")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.32 0.64\n1 0.5 0.5 0.1 0.1\n")  # 32x32 -> medium, 10x5 small
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [x, y]\n")
    return root / "data.yaml"


def test_cli_stats_by_format_dataset_and_config(tmp_path, capsys):
    data_yaml = write_yolo_dataset(tmp_path / "ds")
    assert main(["data", "stats", "--format", "yolo", "--input", str(data_yaml)]) == 0
    out = capsys.readouterr().out
    assert "2 images (1 without boxes), 2 boxes" in out
    assert main(["data", "stats", "--dataset", f"yolo:{data_yaml}:val", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["sizes"] == {"small": 1, "medium": 1, "large": 0} and stats["name"] == f"yolo:{data_yaml}:val"
    config = tmp_path / "cfg.yaml"
    config.write_text(f"DATASETS:\n  TRAIN: ['yolo:{data_yaml}:train']\n  TEST: ['nonexistent_set']\n")
    assert main(["data", "stats", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_boxes"] == 2
    assert main(["data", "stats", "--config", str(config), "--split", "test",
                 f"DATASETS.TEST=['yolo:{data_yaml}:val']", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == f"yolo:{data_yaml}:val"


def test_cli_stats_errors(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text("DATASETS:\n  TEST: ['nonexistent_set']\n")
    assert main(["data", "stats", "--config", str(config), "--split", "test"]) == 2
    assert "od2 data stats: error: unknown dataset 'nonexistent_set'" in capsys.readouterr().err
    assert main(["data", "stats", "--config", str(config), "--split", "val"]) == 2
    assert "train or test" in capsys.readouterr().err
    assert main(["data", "stats", "--format", "voc"]) == 2
    assert "--input PATH is required" in capsys.readouterr().err
    assert main(["data", "stats", "--dataset", f"yolo:{tmp_path}/none.yaml:train"]) == 2
    assert "none.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "stats", "--dataset", "x", "--format", "coco"])  # one source only


def test_unreadable_images_are_reported(tmp_path, capsys):
    stats = dataset_stats(hand_dataset(), unreadable={"/d/2.jpg": "truncated JPEG: no end-of-image marker"})
    assert stats["unreadable_images"] == {"/d/2.jpg": "truncated JPEG: no end-of-image marker"}
    assert "unreadable images: 1\n  /d/2.jpg: truncated JPEG: no end-of-image marker" in format_stats(stats)
    assert "unreadable images: none" in format_stats(dataset_stats(hand_dataset()))

    data_yaml = write_yolo_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "images" / "b.jpg").write_bytes(b"not an image")
    assert main(["data", "stats", "--format", "yolo", "--input", str(data_yaml)]) == 0
    out = capsys.readouterr().out
    assert "1 images (0 without boxes)" in out  # b.jpg (no labels) is left out: its size cannot be read
    assert f"unreadable images: 1\n  {tmp_path / 'ds' / 'images' / 'b.jpg'}: cannot identify image file" in out
    assert main(["data", "stats", "--dataset", f"yolo:{data_yaml}:val", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["unreadable_images"]) == [str(tmp_path / "ds/images/b.jpg")]
