"""MobileNetV3-Large and EfficientNet-B0 backbones, backbone-made C6/C7 (MAKE_C6C7), FrozenBN and freeze_at per
backbone, and MODEL.WEIGHTS loading a torchvision state_dict into each (issue 5)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d as TorchvisionFrozenBN

from od2.config import ConfigError, load_config
from od2.engine.setup import load_initial_weights
from od2.layers.evonorm import EvoNormS0
from od2.layers.frozen_bn import FrozenBatchNorm2d
from od2.modeling.backbones import (
    BackboneWithExtraLevels,
    EfficientNetB0,
    MobileNetV3Large,
    ResNetBackbone,
    build_backbone,
    load_matching_state_dict,
)
from od2.modeling.build import build_model

FROZEN_TYPES = (FrozenBatchNorm2d, TorchvisionFrozenBN)
NETS = {
    "mobilenet_v3_large": (MobileNetV3Large, torchvision.models.mobilenet_v3_large, (40, 112, 960)),
    "efficientnet_b0": (EfficientNetB0, torchvision.models.efficientnet_b0, (40, 112, 320)),
}


def shapes(out: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in out.items()}


def expected(channels: tuple[int, ...], h: int, w: int, first: int = 3) -> dict[str, tuple[int, ...]]:
    """Level k of an H x W image: ceil(H / 2^k) x ceil(W / 2^k)."""
    return {f"C{first + i}": (1, c, math.ceil(h / 2 ** (first + i)), math.ceil(w / 2 ** (first + i)))
            for i, c in enumerate(channels)}


@pytest.mark.parametrize("name", list(NETS))
def test_output_contract_for_odd_sizes(name):
    cls, _, channels = NETS[name]
    model = build_backbone(name, norm_layer=nn.BatchNorm2d).eval()
    assert isinstance(model, cls)
    assert model.out_channels == dict(zip(("C3", "C4", "C5"), channels))
    assert model.strides == {"C3": 8, "C4": 16, "C5": 32}
    for size in [(97, 131), (64, 96), (33, 47)]:
        with torch.no_grad():
            assert shapes(model(torch.randn(1, 3, *size))) == expected(channels, *size)


@pytest.mark.parametrize("name", list(NETS))
def test_taps_are_torchvisions_endpoints(name):
    """C3..C5 equal torchvision's own features at the original's endpoints (same weights loaded)."""
    cls, constructor, _ = NETS[name]
    torch.manual_seed(0)
    reference = constructor(weights=None).eval()
    ours = build_backbone(name, norm_layer=nn.BatchNorm2d).eval()
    report = load_matching_state_dict(ours, reference.state_dict())
    assert report.missing == [] and report.mismatched == []
    assert report.unexpected and all(k.startswith(("classifier.", "features.")) for k in report.unexpected)
    x = torch.randn(1, 3, 64, 96)
    taps = {"mobilenet_v3_large": (6, 12, 16), "efficientnet_b0": (3, 5, 7)}[name]
    want, y = {}, x
    with torch.no_grad():
        for i, block in enumerate(reference.features):
            y = block(y)
            if i in taps:
                want[f"C{3 + taps.index(i)}"] = y
        got = ours(x)
    for level in want:
        torch.testing.assert_close(got[level], want[level])
    # torchvision's nets are trained with these BN eps; ours keep them (else pretrained statistics are off).
    eps = {m.eps for m in ours.modules() if isinstance(m, nn.BatchNorm2d)}
    assert eps == {m.eps for m in reference.modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("name", list(NETS))
def test_frozen_bn_default_has_only_frozen_norms(name):
    model = build_backbone(name)  # norm_layer None: FrozenBN, as MODEL.BACKBONE.NORM=FrozenBN
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, *FROZEN_TYPES))]
    assert norms and all(isinstance(m, FROZEN_TYPES) for m in norms)
    assert not any(list(m.parameters(recurse=False)) for m in norms)  # no trainable norm parameters
    assert any(p.requires_grad for p in model.parameters())  # the convs still learn
    # train() and eval() give the same output: the statistics never move
    x = torch.randn(2, 3, 32, 32)
    a = model.train()(x)["C5"]
    b = model.eval()(x)["C5"]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("freeze_at", [0, 3, 5])
def test_freeze_at_gradients_reach_exactly_the_trainable_parameters(name, freeze_at):
    torch.manual_seed(0)
    model = build_backbone(name, norm_layer=nn.BatchNorm2d, freeze_at=freeze_at).train()
    num_frozen = {"mobilenet_v3_large": {0: 0, 3: 7, 5: 17}, "efficientnet_b0": {0: 0, 3: 4, 5: 8}}
    frozen_blocks = num_frozen[name][freeze_at]
    for pname, p in model.named_parameters():
        assert p.requires_grad == (int(pname.split(".")[1]) >= frozen_blocks), pname
    for mname, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm2d, *FROZEN_TYPES)):
            assert isinstance(m, FROZEN_TYPES) == (int(mname.split(".")[1]) < frozen_blocks), mname
    if freeze_at == 5:
        assert not any(p.requires_grad for p in model.parameters())
        return
    out = model(torch.randn(2, 3, 32, 32))
    sum(v.square().mean() for v in out.values()).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
        else:
            assert p.grad is None, pname


def test_invalid_freeze_at():
    with pytest.raises(ValueError, match="freeze_at"):
        MobileNetV3Large(freeze_at=6)


# ------------------------------------------------------------------------------------------------ MAKE_C6C7


@pytest.mark.parametrize("num_levels,levels", [(1, ["C3", "C4", "C5", "C6"]), (2, ["C3", "C4", "C5", "C6", "C7"])])
def test_extra_levels_are_stride2_3x3_convs_from_c5(num_levels, levels):
    body = ResNetBackbone(18, norm_layer=nn.BatchNorm2d)
    model = BackboneWithExtraLevels(body, num_levels, channels=32, norm="EvoNormS0", activation="NA").eval()
    assert list(model.out_channels) == levels and model.strides["C6"] == 64
    assert model.pixel_mean == ResNetBackbone.pixel_mean
    h, w = 97, 131
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert shapes(out) == expected((128, 256, 512) + (32,) * num_levels, h, w)
    conv = model.convs[0]
    assert conv.conv.kernel_size == (3, 3) and conv.conv.stride == (2, 2) and conv.conv.bias is None
    assert isinstance(conv.norm_act.norm, EvoNormS0)
    # C6 is exactly conv3x3/2(C5) -> EvoNorm: recompute by hand
    with torch.no_grad():
        c5 = out["C5"]
        by_hand = conv.norm_act(torch.nn.functional.conv2d(c5, conv.conv.weight, stride=2, padding=1))
    torch.testing.assert_close(out["C6"], by_hand)


def test_make_c6c7_from_config_and_gradients():
    cfg = load_config(None, ["MODEL.RESNETS.DEPTH=18", "MODEL.BACKBONE.NORM=BN", "MODEL.RESNETS.MAKE_C6C7=C6C7",
                             "MODEL.RESNETS.OUT_CHANNELS=32", "MODEL.NECK.NAME=twoway_fpn",
                             "MODEL.TWOWAYFPN.OUT_CHANNELS=32", "MODEL.TWOWAYFPN.NORM=GN",
                             "MODEL.RETINANET.NUM_CONVS=1"])
    model = build_model(cfg, 3)
    assert isinstance(model.backbone, BackboneWithExtraLevels)
    assert list(model.neck.in_features) == ["C3", "C4", "C5", "C6", "C7"]
    out = model.backbone(torch.randn(1, 3, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    for name, p in model.backbone.named_parameters():
        assert p.grad is not None, name


@pytest.mark.parametrize("overrides,match", [
    (["MODEL.NECK.NAME=twoway_fpn"], r"MODEL.TWOWAYFPN.IN_FEATURES asks for \['C6', 'C7'\].*MODEL.RESNETS.MAKE_C6C7"),
    (["MODEL.BACKBONE.NAME=efficientnet_b0", "MODEL.NECK.NAME=bifpn"], "MODEL.EFFICIENTNETS.MAKE_C6C7"),
    (["MODEL.RESNETS.MAKE_C6C7=C7"], "MAKE_C6C7 'C7' is not one of"),
    (["MODEL.NECK.NAME=pconv", "MODEL.RESNETS.MAKE_C6C7=C6", "MODEL.PCONV.IN_FEATURES=[C3,C4,C5,C6]"],
     "reaches P7"),
    (["MODEL.NECK.NAME=bifpn2"], "MODEL.NECK.NAME 'bifpn2' is not one of"),
    # levels nothing reads: their weights would never train and DDP fails at the second iteration
    (["MODEL.RESNETS.MAKE_C6C7=C6C7"], r"makes \['C6', 'C7'\], but MODEL.FPN.IN_FEATURES"),
    (["MODEL.NECK.NAME=twoway_fpn", "MODEL.RESNETS.MAKE_C6C7=C6C7", "MODEL.RETINANET.IN_FEATURES=[P3,P4,P5,P6]"],
     r"the neck makes \['P7'\] but MODEL.RETINANET.IN_FEATURES"),
    (["MODEL.FPN.IN_FEATURES=[C3,C5]"], "MODEL.FPN.IN_FEATURES: input levels must be consecutive"),
    (["MODEL.FPN.IN_FEATURES=[]"], "MODEL.FPN.IN_FEATURES: a neck needs at least one input level"),
    (["MODEL.FPN.IN_FEATURES=[P3,P4,P5]"], "MODEL.FPN.IN_FEATURES: input feature names must look like 'C3'"),
    (["MODEL.RETINANET.IN_FEATURES=[C3,C4]"], "MODEL.RETINANET.IN_FEATURES must name pyramid levels"),
    (["MODEL.BACKBONE.NAME=mobilenet_v3_large", "MODEL.BACKBONE.PRETRAINED=true"], "no offline ImageNet weights"),
])
def test_config_errors_name_the_key(overrides, match):
    cfg = load_config(None, ["MODEL.RESNETS.DEPTH=18"] + overrides)
    with pytest.raises(ConfigError, match=match):
        build_model(cfg, 3)


# ------------------------------------------------------------------------------------------------ MODEL.WEIGHTS


@pytest.mark.parametrize("name", list(NETS))
def test_model_weights_loads_a_torchvision_state_dict_into_the_wrapped_backbone(name, tmp_path, caplog):
    _, constructor, _ = NETS[name]
    torch.manual_seed(1)
    source = constructor(weights=None)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / "tv.pth"
    torch.save(source.state_dict(), path)
    section = {"mobilenet_v3_large": "MOBILENETS", "efficientnet_b0": "EFFICIENTNETS"}[name]
    cfg = load_config(None, [f"MODEL.BACKBONE.NAME={name}", f"MODEL.{section}.MAKE_C6C7=C6C7",
                             "MODEL.NECK.NAME=bifpn", "MODEL.BIFPN.OUT_CHANNELS=32", "MODEL.RETINANET.NUM_CONVS=1"])
    model = build_model(cfg, 3)
    with caplog.at_level("INFO"):
        load_initial_weights(model, str(path))
    body = model.backbone.body
    loaded = {k: v for k, v in body.state_dict().items()}
    for key, value in loaded.items():
        torch.testing.assert_close(value, source.state_dict()[key], msg=key)
    assert "Checkpoint keys not used by the backbone" in caplog.text and "classifier" in caplog.text
    assert "missing from the checkpoint" not in caplog.text


def test_model_weights_whole_model_skips_mismatched_class_predictor(tmp_path, caplog):
    """Fine-tuning from a checkpoint trained on another dataset: everything loads but the class predictor."""
    overrides = ["MODEL.RESNETS.DEPTH=18", "MODEL.NECK.NAME=bifpn", "MODEL.BIFPN.IN_FEATURES=[C3,C4,C5]",
                 "MODEL.BIFPN.OUT_CHANNELS=32", "MODEL.RETINANET.NUM_CONVS=1"]
    torch.manual_seed(0)
    source = build_model(load_config(None, overrides), 80)
    path = tmp_path / "coco_model.pth"
    torch.save({"model": source.state_dict(), "iteration": 10}, path)
    target = build_model(load_config(None, overrides), 3)
    with caplog.at_level("INFO"):
        reports = load_initial_weights(target, str(path))
    assert all(r.prefix == "" and r.unexpected == [] for r in reports.values())
    assert reports["backbone"].missing == reports["neck"].missing == []
    assert reports["head"].missing == ["cls_score.weight", "cls_score.bias"]
    assert reports["head"].mismatched == ["cls_score.weight: (720, 32, 3, 3) vs (27, 32, 3, 3)",
                                          "cls_score.bias: (720,) vs (27,)"]
    assert "whole model" in caplog.text and "shape mismatch" in caplog.text
    for key, value in target.state_dict().items():
        if not key.startswith("head.cls_score"):
            torch.testing.assert_close(value, source.state_dict()[key], msg=key)


def _save(tmp_path, state, name="weights.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return str(path)


def test_model_weights_between_configs_with_and_without_c6c7(tmp_path):
    """An od2 checkpoint of an FPN model (backbone.layer1...) initialises a TwoWayFPN model (backbone.body.layer1...)
    and the reverse: the backbone part goes to the bare backbone either way."""
    plain = ["MODEL.RESNETS.DEPTH=18", "MODEL.BACKBONE.NORM=BN", "MODEL.RETINANET.NUM_CONVS=1"]
    wrapped = plain + ["MODEL.RESNETS.MAKE_C6C7=C6C7", "MODEL.NECK.NAME=twoway_fpn", "MODEL.TWOWAYFPN.NORM=GN"]
    torch.manual_seed(0)
    fpn_model, twoway_model = build_model(load_config(None, plain), 3), build_model(load_config(None, wrapped), 3)
    reports = load_initial_weights(twoway_model, _save(tmp_path, {"model": fpn_model.state_dict()}))
    assert reports["backbone"].missing == [] and reports["backbone"].unexpected == []
    assert reports["backbone"].loaded == sorted(fpn_model.backbone.state_dict())
    torch.testing.assert_close(twoway_model.backbone.body.layer3[0].conv1.weight,
                               fpn_model.backbone.layer3[0].conv1.weight)
    # the reverse: body. is stripped, the C6/C7 convs are reported unused
    back = build_model(load_config(None, plain), 3)
    reports = load_initial_weights(back, _save(tmp_path, {"model": twoway_model.state_dict()}, "b.pth"))
    assert reports["backbone"].prefix == "body." and reports["backbone"].missing == []
    assert reports["backbone"].unexpected and all(k.startswith("convs.") for k in reports["backbone"].unexpected)


def test_model_weights_from_a_torchvision_detection_checkpoint(tmp_path):
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    model = build_model(load_config(None, ["MODEL.BACKBONE.NORM=BN"]), 3)
    reports = load_initial_weights(model, _save(tmp_path, tv.state_dict()))
    # load_checkpoint turns a torchvision RetinaNet into od2's layout: the whole backbone loads, and the FPN's lateral
    # and output convs load into the neck (its P6 conv reads P5 there, C5 here: skipped for its shape)
    assert reports["backbone"].missing == [] and reports["backbone"].unexpected == []
    assert len(reports["neck"].loaded) == 15 and reports["neck"].missing == ["extra.0.conv.weight"]
    assert reports["head"].missing == ["cls_score.weight", "cls_score.bias"]  # 91 COCO slots -> 80, not 3 classes
    torch.testing.assert_close(model.backbone.layer4[2].conv3.weight, tv.backbone.body.layer4[2].conv3.weight)


def test_model_weights_of_another_architecture_is_an_error(tmp_path):
    model = build_model(load_config(None, ["MODEL.RESNETS.DEPTH=18", "MODEL.RETINANET.NUM_CONVS=1"]), 3)
    foreign = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    with pytest.raises(RuntimeError, match=r"none of its \d+ backbone tensors fit the ResNetBackbone"):
        load_initial_weights(model, _save(tmp_path, foreign))
