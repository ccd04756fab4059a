"""``od2 eval`` refuses a checkpoint trained with other classes, or the same classes in another order, than the test
set's: label k is a position in the class list, so it would score garbage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from od2.cli import main
from od2.data.catalog import get_dataset, register_coco_instances
from od2.data.datasets.digits import ensure_digits
from od2.evaluation.evaluate import require_checkpoint_classes

CONFIG = Path(__file__).resolve().parents[2] / "configs/digits/retinanet_lite0.yaml"


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> str:
    split = ensure_digits(tmp_path_factory.mktemp("eval_classes"), num_train=1, num_val=2, seed=4)["val"]
    register_coco_instances("eval_classes_val", split.json_file, split.image_root)
    return "eval_classes_val"


@pytest.mark.parametrize("order", ["reversed", "other"])
def test_eval_stops_naming_both_class_lists_when_they_differ(test_set, tmp_path, capsys, order):
    names = list(get_dataset(test_set).class_names)
    trained = names[::-1] if order == "reversed" else [*names[:-1], "eleven"]
    weights = tmp_path / "model.pth"
    torch.save({"model": {}, "class_names": trained, "iteration": 5}, weights)
    code = main(["eval", "--config", str(CONFIG), "--weights", str(weights), "MODEL.DEVICE=cpu",
                 f"DATASETS.TEST=[{test_set}]", f"OUTPUT_DIR={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(weights) in err and str(trained) in err and str(names) in err and test_set in err
    assert ("another order" in err) == (order == "reversed")
    assert not (tmp_path / "out" / "eval" / "coco_summary.json").exists()


def test_checkpoint_classes_equal_to_the_test_sets_or_absent_pass(test_set):
    info = get_dataset(test_set)
    require_checkpoint_classes({"model": {}, "class_names": list(info.class_names)}, "model.pth", info)
    require_checkpoint_classes({"model": {}}, "bare_state_dict.pth", info)  # no names to compare
