"""``od2 model-info``: parameter counts against the model, FLOPs against an independent FlopCounterMode run and
their scaling, feature-map shapes against the strides, the default input size, the CLI table and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from od2.cli import main
from od2.config import load_config
from od2.modeling.build import build_model
from od2.tools.model_info import format_model_info, model_info, resolve_input_size

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "configs/digits/retinanet_lite0.yaml")
COCO = str(ROOT / "configs/coco/RetinaNet-GN.yaml")
FAST = ["MODEL.DEVICE=cpu", "MODEL.BACKBONE.PRETRAINED=false"]


def digits_cfg(*opts: str):
    return load_config(DIGITS, [*FAST, *opts])


def test_parameter_counts_match_the_model_and_parts_add_up():
    cfg = digits_cfg()  # FREEZE_AT 4: stem..C4 of the backbone frozen
    info = model_info(cfg, 10, size=(64, 64))
    model = build_model(cfg, 10)
    params = info["params"]
    assert params["total"] == sum(p.numel() for p in model.parameters())
    assert params["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert set(params["parts"]) == {"backbone", "neck", "head"}
    assert sum(part["total"] for part in params["parts"].values()) == params["total"]
    assert sum(part["trainable"] for part in params["parts"].values()) == params["trainable"]
    assert params["parts"]["backbone"]["trainable"] < params["parts"]["backbone"]["total"]
    assert params["trainable"] < params["total"]
    assert params["parts"]["head"]["trainable"] == params["parts"]["head"]["total"]

    unfrozen = model_info(digits_cfg("MODEL.BACKBONE.FREEZE_AT=0"), 10, size=(64, 64))["params"]
    assert unfrozen["trainable"] == unfrozen["total"] == params["total"]


def test_flops_equal_an_independent_flop_counter_run():
    cfg = digits_cfg()
    info = model_info(cfg, 10, size=(64, 96))
    model = build_model(cfg, 10).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.raw_outputs(model.normalize(torch.zeros(1, 3, 64, 96, dtype=torch.uint8)))
    expected = counter.get_total_flops()
    assert expected > 0
    assert info["flops"] == expected
    assert info["gflops"] == pytest.approx(expected / 1e9)
    assert info["gmacs"] == pytest.approx(expected / 2e9)
    assert sum(info["flops_parts"].values()) == expected
    assert set(info["flops_parts"]) == {"backbone", "neck", "head"}


def test_flops_scale_with_the_input_area():
    cfg = digits_cfg()
    small = model_info(cfg, 10, size=(128, 192))["flops"]
    large = model_info(cfg, 10, size=(256, 384))["flops"]
    assert large / small == pytest.approx(4.0, rel=0.1)


def test_feature_maps_match_strides_for_an_odd_size():
    cfg = digits_cfg()
    info = model_info(cfg, 10, size=(100, 150))
    h, w = info["input_size"]
    assert (h, w) == (128, 160)  # padded to SIZE_DIVISIBILITY 32
    assert info["requested_size"] == [100, 150]
    backbone = info["features"]["backbone"]
    neck = info["features"]["neck"]
    assert [f["name"] for f in backbone] == ["C3", "C4", "C5"]
    assert [f["name"] for f in neck] == ["P3", "P4", "P5", "P6", "P7"]
    model = build_model(cfg, 10)
    for f in backbone + neck:
        stride = 2 ** int(f["name"][1:])
        assert f["stride"] == stride
        assert (f["height"], f["width"]) == (math.ceil(h / stride), math.ceil(w / stride)), f
    assert [f["channels"] for f in backbone] == [model.backbone.out_channels[n] for n in ("C3", "C4", "C5")]
    assert {f["channels"] for f in neck} == {cfg.MODEL.FPN.OUT_CHANNELS}


def test_default_input_size():
    assert resolve_input_size(load_config(COCO, [])) == (576, 768)
    assert resolve_input_size(load_config(COCO, ["INPUT.MAX_SIZE_TEST=700"])) == (576, 704)  # capped, padded
    assert resolve_input_size(digits_cfg()) == (192, 256)
    assert resolve_input_size(digits_cfg(), (100, 150)) == (128, 160)
    assert resolve_input_size(digits_cfg("INPUT.SIZE_DIVISIBILITY=0"), (100, 150)) == (100, 150)


def test_cli_table_and_json(capsys):
    args = ["model-info", "--config", DIGITS, "--size", "100", "150", *FAST]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "classes: 80 (from argument)" in table
    for text in ("backbone", "neck", "head", "GFLOPs", "GMACs", "multiply-add counts as 2 FLOPs",
                 "128x160", "P7", "stride 128"):
        assert text in table, text

    assert main([*args, "--json", "--num-classes", "7"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 7 and info["num_classes_source"] == "argument"
    assert info["input_size"] == [128, 160]
    assert "classes: 7 (from argument)" in format_model_info(info)

    assert main([*args, "--json", "MODEL.RETINANET.NUM_CLASSES=5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 5 and info["num_classes_source"] == "MODEL.RETINANET.NUM_CLASSES"
