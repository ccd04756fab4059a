"""TEST.WINOGRAD: od2 eval (evaluate_model, which training's evaluation also runs) and od2 predict convert the model
by convert_to_winograd only when the key is on, and the converted model detects what the plain one does."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import od2.layers.winograd as winograd_module
import od2.modeling.build as build_module
from od2.cli import main
from od2.config import load_config
from od2.data.catalog import register_coco_instances
from od2.data.datasets.digits import ensure_digits
from od2.evaluation.evaluate import evaluate_model
from od2.layers.winograd import WinogradConv2d

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/digits/retinanet_lite0.yaml"
DATASET = "winograd_option_val"


@pytest.fixture(scope="module")
def digits_val(tmp_path_factory):
    paths = ensure_digits(tmp_path_factory.mktemp("winograd_digits"), num_train=2, num_val=3, seed=5)
    try:
        register_coco_instances(DATASET, paths["val"].json_file, paths["val"].image_root)
    except ValueError:  # registered by an earlier run in the same session
        pass
    return paths["val"]


@dataclass
class Recorder:
    models: list = field(default_factory=list)  # the models given to convert_to_winograd
    runs: list = field(default_factory=list)  # the input shapes of the Winograd convolutions that ran


@pytest.fixture
def conversions(monkeypatch) -> Recorder:
    """Records conversions and Winograd runs; lets the digits model's 64-channel head convs qualify, so that Winograd
    really runs on its P3 maps (24x32 at the test size)."""
    monkeypatch.setattr(winograd_module, "MIN_CHANNELS", 64)
    recorder = Recorder()
    convert, winograd_conv3x3 = build_module.convert_to_winograd, winograd_module.winograd_conv3x3
    monkeypatch.setattr(build_module, "convert_to_winograd", lambda model: recorder.models.append(model)
                        or convert(model))
    monkeypatch.setattr(winograd_module, "winograd_conv3x3",
                        lambda *args: recorder.runs.append(args[0].shape) or winograd_conv3x3(*args))
    return recorder


def winograd_convs(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, WinogradConv2d)]


def test_evaluate_model_converts_only_when_test_winograd_is_on(digits_val, confident_model, conversions, tmp_path):
    summaries, detections = {}, {}
    for on in (False, True):
        cfg = load_config(CONFIG, [f"DATASETS.TEST=[{DATASET}]", "DATALOADER.NUM_WORKERS=0", f"TEST.WINOGRAD={on}"])
        model = copy.deepcopy(confident_model)
        summaries[on] = evaluate_model(cfg, model, torch.device("cpu"), DATASET, tmp_path / str(on), quiet=True)
        detections[on] = json.loads((tmp_path / str(on) / "detections.json").read_text())
        assert bool(winograd_convs(model)) == on
        assert bool(conversions.runs) == on
    assert len(conversions.models) == 1
    assert {"head.cls_score", "head.cls_tower.convs.0"} <= set(winograd_convs(conversions.models[0]))
    assert len(detections[True]) == len(detections[False]) > 0
    np.testing.assert_allclose([d["bbox"] for d in detections[True]], [d["bbox"] for d in detections[False]],
                               atol=2e-3)
    np.testing.assert_allclose([d["score"] for d in detections[True]], [d["score"] for d in detections[False]],
                               atol=1e-4)
    assert summaries[True]["AP"] == pytest.approx(summaries[False]["AP"], abs=1e-3)


def test_predict_cli_converts_only_when_test_winograd_is_on(digits_val, confident_model, conversions, tmp_path):
    weights = tmp_path / "model.pth"
    torch.save({"model": confident_model.state_dict(), "class_names": [str(i) for i in range(10)]}, weights)
    results = {}
    for on in (False, True):
        out = tmp_path / f"out_{on}"
        assert main(["predict", "--config", str(CONFIG), "--weights", str(weights), str(digits_val.image_root),
                     "--out", str(out), "--no-draw", "MODEL.DEVICE=cpu", "DATALOADER.NUM_WORKERS=0",
                     f"TEST.WINOGRAD={on}"]) == 0
        results[on] = json.loads((out / "detections.json").read_text())
        assert len(conversions.models) == int(on) and bool(conversions.runs) == on
    assert winograd_convs(conversions.models[0])
    assert len(results[True]) == len(results[False]) > 0
    np.testing.assert_allclose([d["bbox"] for d in results[True]], [d["bbox"] for d in results[False]], atol=2e-3)
