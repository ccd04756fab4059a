"""Tests of od2.data.image_check: the cached integrity check of a dataset's images when it is first loaded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from od2.data import image_check
from od2.data.image_check import BadImagesError, cache_dir, check_image, check_images, drop_bad_images
from od2.data.records import DatasetInfo, coco_gt_from_records, make_record


def write_good_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / (f"good{i}.jpg" if i % 2 else f"good{i}.png")
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def dataset_of(paths: list[Path]) -> DatasetInfo:
    records = [make_record(str(p), i + 1, 12, 16, [[1, 1, 5, 5]], [0], [False]) for i, p in enumerate(paths)]
    return DatasetInfo("toy", records, ["thing"], [1], coco_gt_from_records(records, ["thing"]))


def test_check_image_finds_each_kind_of_bad_file(bad_images: dict[str, Path], tmp_path: Path) -> None:
    good_png, good_jpg = write_good_images(tmp_path, 2)
    assert check_image(good_png) == ((16, 12), "")
    assert check_image(good_jpg) == ((16, 12), "")
    # PIL's verify passes a truncated JPEG: only the missing end marker gives it away.
    assert check_image(bad_images["truncated"]) == ((64, 64), "truncated JPEG: no end-of-image marker (FF D9) at the "
                                                             "end of the file")
    assert check_image(bad_images["not_image"]) == (None, "not an image format PIL can read")
    assert check_image(bad_images["bomb"]) == ((50000, 50000), "")  # the size is sound; the limit is applied later
    assert check_image(tmp_path / "missing.png") == (None, "file not found")
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(good_png.read_bytes()[:-30])  # a chunk cut short
    size, reason = check_image(broken_png)
    assert reason


def test_check_images_reports_every_bad_file_with_its_reason(bad_images: dict[str, Path], tmp_path: Path) -> None:
    good = write_good_images(tmp_path, 3)
    paths = [good[0], bad_images["truncated"], good[1], bad_images["not_image"], bad_images["bomb"], good[2]]
    bad = check_images(paths, progress=False)
    assert list(bad) == [str(bad_images[k]) for k in ("truncated", "not_image", "bomb")]
    assert "50000x50000 = 2500000000 pixels, more than the limit of 89478485" in bad[str(bad_images["bomb"])]
    assert str(bad_images["bomb"]) not in check_images(paths, max_pixels=0, progress=False)


def test_results_are_cached_per_file_on_size_and_mtime(bad_images: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OD2_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    good = write_good_images(tmp_path, 4)
    paths = [*good, bad_images["truncated"]]
    checked = []
    real_check = image_check._check_entry
    monkeypatch.setattr(image_check, "_check_entry", lambda item: checked.append(item[0]) or real_check(item))
    first = check_images(paths, progress=False)
    assert sorted(checked) == sorted(map(str, paths)) and list(first) == [str(bad_images["truncated"])]
    assert len(list((tmp_path / "cache" / "image_checks").glob("*.json"))) == 1

    checked.clear()
    assert check_images(paths, progress=False) == first and checked == []
    assert str(good[0]) in check_images(paths, max_pixels=100, progress=False)  # the limit uses the cached size
    assert checked == []

    good[1].write_bytes(bad_images["not_image"].read_bytes())  # replaced: new size and mtime
    stat = good[2].stat()
    os.utime(good[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, new mtime
    assert list(check_images(paths, progress=False)) == [str(good[1]), str(bad_images["truncated"])]
    assert sorted(checked) == sorted([str(good[1]), str(good[2])])


def test_damaged_cache_means_a_new_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OD2_CACHE_DIR", str(tmp_path / "cache"))
    good = write_good_images(tmp_path, 2)
    check_images(good, progress=False)
    [cache_file] = (tmp_path / "cache" / "image_checks").glob("*.json")
    cache_file.write_text("{not json")
    assert check_images(good, progress=False) == {}


def test_worker_processes_give_the_serial_result(bad_images: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [*write_good_images(tmp_path, 6), *bad_images.values()]
    monkeypatch.setattr(image_check, "_MIN_FILES_FOR_WORKERS", 1)
    monkeypatch.setenv("OD2_CACHE_DIR", str(tmp_path / "workers"))
    in_workers = check_images(paths, num_workers=2, progress=False)
    monkeypatch.setenv("OD2_CACHE_DIR", str(tmp_path / "serial"))
    assert in_workers == check_images(paths, num_workers=0, progress=False)
    assert list(in_workers) == [str(p) for p in bad_images.values()]


def test_drop_bad_images_leaves_them_out_and_logs_the_list(bad_images: dict[str, Path], tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    info = dataset_of([*write_good_images(tmp_path, 10), bad_images["truncated"]])
    with caplog.at_level(logging.WARNING):
        kept = drop_bad_images(info, progress=False)
    assert [r["file_name"] for r in kept.records] == [r["file_name"] for r in info.records[:10]]
    assert [im["id"] for im in kept.coco_gt["images"]] == list(range(1, 11))
    assert {a["image_id"] for a in kept.coco_gt["annotations"]} == set(range(1, 11))
    assert kept.skipped == {"unreadable_image": 1}
    assert list(kept.unreadable_images) == [str(bad_images["truncated"])]
    assert "'toy': 1 of 11 images are unreadable" in caplog.text and "truncated.jpg: truncated JPEG" in caplog.text
    assert len(info.records) == 11  # the loaded dataset (shared through the catalog's cache) is not modified
    sound = dataset_of(write_good_images(tmp_path, 3))
    assert drop_bad_images(sound, progress=False) is sound


def test_drop_bad_images_stops_on_error_policy_or_above_the_share(bad_images: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    info = dataset_of([*write_good_images(tmp_path, 9), bad_images["not_image"]])  # 10% bad
    with pytest.raises(BadImagesError, match=r"(?s)1 of 10 images.*notes\.jpg: not an image.*BAD_IMAGES=error"):
        drop_bad_images(info, policy="error", progress=False)
    assert len(drop_bad_images(info, max_share=0.1, progress=False).records) == 9
    with pytest.raises(BadImagesError, match=r"10\.0% of the images, more than DATALOADER.MAX_BAD_IMAGE_SHARE=0.05"):
        drop_bad_images(info, max_share=0.05, progress=False)
    with pytest.raises(ValueError, match="DATALOADER.BAD_IMAGES must be one of .*'skip', 'error'.*'ignore'"):
        drop_bad_images(info, policy="ignore", progress=False)
    with pytest.raises(ValueError, match="MAX_BAD_IMAGE_SHARE must be in"):
        drop_bad_images(info, max_share=1.5, progress=False)


def test_load_datasets_checks_images_as_the_config_says(bad_images: dict[str, Path], tmp_path: Path) -> None:
    import json

    from od2.config import get_cfg
    from od2.data.catalog import register_coco_instances
    from od2.data.setup import load_datasets

    info = dataset_of([*write_good_images(tmp_path / "bad", 4), bad_images["bomb"]])
    (tmp_path / "gt.json").write_text(json.dumps(info.coco_gt))
    name = f"toy_with_bomb_{tmp_path.name}"
    register_coco_instances(name, tmp_path / "gt.json", tmp_path / "bad")
    cfg = get_cfg()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.MAX_BAD_IMAGE_SHARE = 0.5
    loaded = load_datasets([name], cfg)
    assert len(loaded.records) == 4 and loaded.skipped.get("unreadable_image") == 1
    cfg.INPUT.MAX_IMAGE_PIXELS = 0  # no limit: the bomb's header is sound, so it stays in
    assert len(load_datasets([name], cfg).records) == 5
    cfg.INPUT.MAX_IMAGE_PIXELS = 89_478_485
    cfg.DATALOADER.BAD_IMAGES = "error"
    with pytest.raises(BadImagesError, match="bomb.png"):
        load_datasets([name], cfg)


def test_images_the_reader_left_out_count_as_bad(tmp_path: Path) -> None:
    info = dataset_of(write_good_images(tmp_path, 3))
    info.unreadable_images = {str(tmp_path / "gone.jpg"): "cannot read the size"}
    with pytest.raises(BadImagesError, match=r"(?s)1 of 4 images.*gone\.jpg: cannot read the size"):
        drop_bad_images(info, policy="error", progress=False)
    with pytest.raises(BadImagesError, match="25.0% of the images"):
        drop_bad_images(info, max_share=0.2, progress=False)
    assert drop_bad_images(info, max_share=0.5, progress=False) is info
