"""Evaluation refuses weights that do not cover the model, datasets whose classes the model lacks, empty test
sets, and test sets whose class list is not the training set's."""

import pytest
import torch
import torch.nn as nn

from od2.config import load_config
from od2.data.setup import load_datasets
from od2.engine.checkpoint import load_model_weights
from od2.evaluation.evaluate import evaluate_model


def test_require_all_rejects_a_partial_state_dict(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    torch.save({"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(3)}, tmp_path / "partial.pth")
    load_model_weights(model, tmp_path / "partial.pth")  # training init: a warning is enough
    with pytest.raises(RuntimeError, match="lacks 2 of the model's weights"):
        load_model_weights(model, tmp_path / "partial.pth", require_all=True)


def test_evaluating_on_a_dataset_with_other_classes_is_an_error(tmp_path):
    from od2.data.catalog import register_coco_instances
    from od2.data.datasets.digits import ensure_digits

    paths = ensure_digits(tmp_path, num_train=2, num_val=2, seed=1)
    register_coco_instances("classes_check_val", paths["val"].json_file, paths["val"].image_root)
    model = nn.Module()
    model.num_classes = 3  # digits has 10
    cfg = load_config(None, ["DATASETS.TEST=[classes_check_val]"])
    with pytest.raises(ValueError, match="predicts 3 classes but classes_check_val has 10"):
        evaluate_model(cfg, model, torch.device("cpu"), "classes_check_val", tmp_path / "eval")


def test_evaluating_on_an_empty_test_set_is_an_error_not_ap_minus_1(tmp_path, monkeypatch, capsys):
    import json

    from od2.cli import main
    from od2.data import catalog
    from od2.evaluation.evaluate import build_evaluator

    monkeypatch.setattr(catalog, "_registered", {})
    monkeypatch.setattr(catalog, "_cache", {})
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    catalog.register_coco_instances("empty_val", empty, tmp_path)
    model = nn.Module()
    model.num_classes = 1
    cfg = load_config(None, ["DATASETS.TEST=[empty_val]", f"OUTPUT_DIR={tmp_path}"])
    with pytest.raises(ValueError, match=r"dataset 'empty_val' \(DATASETS.TEST\) has no images"):
        evaluate_model(cfg, model, torch.device("cpu"), "empty_val", tmp_path / "eval")
    with pytest.raises(ValueError, match="'empty_val'"):  # before training starts, not at its first evaluation
        build_evaluator(cfg)
    assert main(["eval", "--config", "digits/retinanet_lite0", "--weights", str(tmp_path / "w.pth"),
                 "DATASETS.TEST=[empty_val]", f"OUTPUT_DIR={tmp_path}"]) == 1
    assert "'empty_val' (DATASETS.TEST)" in capsys.readouterr().err
    assert not (tmp_path / "eval" / "coco_summary.json").exists()


def test_a_test_set_listing_the_classes_in_another_order_is_relabelled_to_the_training_order(tmp_path, monkeypatch):
    """The labels are positions in the class list: a test set listing the training classes in another order is
    relabelled by name to the config's one class list (it used to be refused), so label k means the same class."""
    import json

    from PIL import Image

    from od2.data import catalog
    from od2.evaluation.evaluate import build_evaluator

    monkeypatch.setattr(catalog, "_registered", {})
    monkeypatch.setattr(catalog, "_cache", {})
    Image.new("RGB", (9, 9)).save(tmp_path / "1.jpg")
    for name, classes in (("cls_train", ["cat", "dog"]), ("cls_same", ["cat", "dog"]), ("cls_swapped", ["dog", "cat"])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg", "height": 9, "width": 9}],
                                    "annotations": [],
                                    "categories": [{"id": k, "name": n} for k, n in enumerate(classes, 1)]}))
        catalog.register_coco_instances(name, path, tmp_path)
    cfg = load_config(None, ["DATASETS.TRAIN=[cls_train]", "DATASETS.TEST=[cls_swapped]"])
    build_evaluator(cfg)
    swapped = load_datasets(["cls_swapped"], cfg, key="DATASETS.TEST")
    assert swapped.class_names == ["cat", "dog"]
    names = {c["id"]: c["name"] for c in swapped.coco_gt["categories"]}
    assert [names[k] for k in swapped.category_ids] == ["cat", "dog"]


def test_eval_refuses_weights_whose_category_ids_are_not_the_test_sets(tmp_path, confident_model, capsys):
    """Weights that carry category ids (torchvision's COCO weights: COCO's) are scored with the test set's ids, so
    those must agree; the digits set numbers its 10 classes 1..10."""
    from od2.cli import main
    from od2.data.catalog import register_coco_instances
    from od2.data.datasets.digits import ensure_digits

    paths = ensure_digits(tmp_path, num_train=2, num_val=2, seed=1)
    register_coco_instances("category_ids_check_val", paths["val"].json_file, paths["val"].image_root)
    weights = tmp_path / "w.pth"
    torch.save({"model": confident_model.state_dict(), "category_ids": [10 * (k + 1) for k in range(10)]}, weights)
    args = ["eval", "--config", "digits/retinanet_lite0", "--weights", str(weights),
            "DATASETS.TEST=[category_ids_check_val]", f"OUTPUT_DIR={tmp_path}", "MODEL.DEVICE=cpu"]
    assert main(args) == 2  # a config error
    assert "category ids [10, 20," in capsys.readouterr().err
    torch.save({"model": confident_model.state_dict(), "category_ids": list(range(1, 11))}, weights)
    assert main(args) == 0
