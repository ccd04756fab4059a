"""Config -> datasets: the checks od2.data.setup makes before any loader runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from od2.config import load_config
from od2.data import catalog
from od2.data.setup import load_datasets


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
