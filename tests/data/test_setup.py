"""Config -> datasets: the checks od2.data.setup makes before any loader runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from od2.config import ConfigError, load_config
from od2.data import catalog
from od2.data.setup import build_test_loader_from_cfg, build_train_loader_from_cfg, load_datasets


@pytest.fixture(autouse=True)
def isolated_catalog(monkeypatch):
    monkeypatch.setattr(catalog, "_registered", {})
    monkeypatch.setattr(catalog, "_cache", {})


def register_coco(tmp_path: Path, name: str, num_images: int, categories=("a", "b")) -> None:
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 20, "width": 30} for i in range(1, num_images + 1)]
    annotations = [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in range(1, num_images + 1)]
    for image in images:
        Image.new("RGB", (30, 20)).save(tmp_path / image["file_name"])
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": k, "name": n} for k, n in enumerate(categories, 1)]}),
                    encoding="utf-8")
    catalog.register_coco_instances(name, path, tmp_path)


def test_an_empty_dataset_is_an_error_that_names_it(tmp_path):
    register_coco(tmp_path, "full", 2)
    register_coco(tmp_path, "hollow", 0)
    cfg = load_config(None, [])
    with pytest.raises(ValueError, match=r"dataset 'hollow' \(DATASETS.TRAIN\) has no images"):
        load_datasets(["full", "hollow"], cfg)
    with pytest.raises(ValueError, match=r"dataset 'hollow' \(DATASETS.TEST\) has no images"):
        load_datasets(["hollow"], cfg, key="DATASETS.TEST")
    assert len(load_datasets(["full"], cfg).records) == 2


@pytest.mark.parametrize("key,device,expected", [("always", "cpu", True), ("never", "cuda", False),
                                                 ("auto", "cpu", False)])
def test_pin_memory_follows_the_key(tmp_path, key, device, expected):
    register_coco(tmp_path, "pinned", 2)
    cfg = load_config(None, [f"DATALOADER.PIN_MEMORY={key}", f"MODEL.DEVICE={device}", "DATALOADER.NUM_WORKERS=0"])
    records = load_datasets(["pinned"], cfg).records
    assert build_test_loader_from_cfg(cfg, records).pin_memory is expected
    assert build_train_loader_from_cfg(cfg, records).pin_memory is expected


def test_pin_memory_auto_means_on_for_a_cuda_device(tmp_path, monkeypatch):
    register_coco(tmp_path, "pinned", 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = load_config(None, ["MODEL.DEVICE=cuda:0", "DATALOADER.NUM_WORKERS=0"])
    assert build_test_loader_from_cfg(cfg, load_datasets(["pinned"], cfg).records).pin_memory


def test_an_unknown_pin_memory_value_is_a_config_error(tmp_path):
    register_coco(tmp_path, "pinned", 2)
    cfg = load_config(None, ["DATALOADER.PIN_MEMORY=sometimes"])
    with pytest.raises(ConfigError, match="DATALOADER.PIN_MEMORY"):
        build_test_loader_from_cfg(cfg, load_datasets(["pinned"], cfg).records)


def test_test_compile_pads_every_batch_to_one_square_canvas(tmp_path):
    """MAX_SIZE_TEST 50 rounded up to SIZE_DIVISIBILITY 32: a 64 x 64 canvas for the 20 x 30 images, which without
    TEST.COMPILE pad to 32 x 32."""
    register_coco(tmp_path, "canvas", 2)
    overrides = ["INPUT.MIN_SIZE_TEST=20", "INPUT.MAX_SIZE_TEST=50", "INPUT.SIZE_DIVISIBILITY=32",
                 "DATALOADER.NUM_WORKERS=0"]
    cfg = load_config(None, overrides)
    records = load_datasets(["canvas"], cfg).records
    assert next(iter(build_test_loader_from_cfg(cfg, records)))["images"].shape[-2:] == (32, 32)
    cfg = load_config(None, [*overrides, "TEST.COMPILE=reduce-overhead"])
    batch = next(iter(build_test_loader_from_cfg(cfg, records)))
    assert batch["images"].shape[-2:] == (64, 64) and batch["image_sizes"].tolist() == [[20, 30]]
