"""Evaluation refuses weights that do not cover the model, and datasets whose classes the model lacks."""

import pytest
import torch
import torch.nn as nn

from od2.config import load_config
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
