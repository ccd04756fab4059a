"""od2.models: the builders give the models of the config files they name, by the same construction path, and
their inference output has the documented format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from od2.config import CfgNode, ConfigError, load_config
from od2.modeling import BACKBONES, NECKS, RetinaNet
from od2.modeling.backbones.efficientnet_lite import pretrained_weights_path
from od2.modeling.build import build_model
from od2.models import efficientdet_d0, efficientdet_d0_config, retinanet, retinanet_config

REPO = Path(__file__).resolve().parents[1]

# config file -> the builder call that names the same model (only MODEL keys are compared: data and solver are not
# the model's)
EQUIVALENT = {
    "coco/RetinaNet-GN": lambda: retinanet_config(norm="GN"),
    "coco/RetinaNet-BN": lambda: retinanet_config(norm="GN", head_norm="BN"),
    "coco/RetinaNet-EvoNormS-GIoU": lambda: retinanet_config(norm="EvoNormS0", box_loss="giou"),
    "coco/RetinaNet-SN-GIoU": lambda: retinanet_config(norm="SN", box_loss="giou"),
    "coco/RetinaNet-MobileNetV3-EvoNormS-GIoU": lambda: retinanet_config("mobilenet_v3_large", norm="EvoNormS0",
                                                                         box_loss="giou"),
    "coco/RetinaNet-TwoWayFPN-EvoNormS-GIoU": lambda: retinanet_config(neck="twoway_fpn", norm="EvoNormS0",
                                                                       box_loss="giou"),
    "coco/RetinaNet-PConv-EvoNormS-GIoU": lambda: retinanet_config(neck="pconv", norm="EvoNormS0", box_loss="giou",
                                                                   num_convs=1),
    "coco/EfficientDet-D0": lambda: retinanet_config("efficientnet_b0", "bifpn", norm="GN", head_norm="EvoNormS0",
                                                     num_convs=3, box_loss="giou"),
    "coco/EfficientDet-D0-R50": lambda: retinanet_config("resnet50", "bifpn", norm="GN", head_norm="EvoNormS0",
                                                         num_convs=3, box_loss="giou",
                                                         overrides=["MODEL.BIFPN.OUT_CHANNELS=96"]),
    "coco/EfficientDet-D0-official": efficientdet_d0_config,
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_keys_in_use(cfg: CfgNode) -> dict:
    """MODEL without the sections of the backbone families and necks the config does not select, and without
    WEIGHTS: the initial weights are no part of the architecture (the COCO configs name the ImageNet weights their
    rows start from; the builders take them as ``pretrained_backbone``)."""
    registered = {e.section.name for e in [*BACKBONES.values(), *NECKS.values()]} | {"WEIGHTS"}
    used = {BACKBONES[cfg.MODEL.BACKBONE.NAME].section.name, NECKS[cfg.MODEL.NECK.NAME].section.name}
    return {key: value for key, value in cfg.MODEL.items() if key not in registered - used}


@pytest.mark.parametrize("name", list(EQUIVALENT))
def test_builder_config_is_the_config_file_s_model(name):
    assert model_keys_in_use(EQUIVALENT[name]()) == model_keys_in_use(load_config(REPO / "configs" / f"{name}.yaml"))


@pytest.mark.parametrize("name,build", [
    ("coco/RetinaNet-GN", lambda: retinanet("resnet50", "fpn", num_classes=80, norm="GN")),
    ("coco/EfficientDet-D0-official", lambda: efficientdet_d0(num_classes=80)),
])
def test_builder_model_is_the_config_file_s_model(name, build):
    torch.manual_seed(0)
    ours = build()
    torch.manual_seed(0)
    reference = build_model(load_config(REPO / "configs" / f"{name}.yaml"), 80)
    assert count(ours) == count(reference)
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert list(ours_state) == list(reference_state)
    for key, value in reference_state.items():
        assert torch.equal(ours_state[key], value), key


def test_efficientdet_d0_has_the_published_size():
    model = efficientdet_d0(90, backbone_norm="BN")  # trainable BN, as the paper counts it
    # effdet 0.4.1's tf_efficientdet_d0 (3,880,067) less its first cell's C4/C5 re-projections and the biases it
    # keeps before BN (tests/modeling/test_param_counts.py): 3.85M, the paper's rounded 3.9M
    assert count(model) == 3_880_067 - ((112 + 320) * 64 + 2 * 2 * 64) - (24 + 6 + 6) * 64
    assert [type(m).__name__ for m in (model.backbone, model.neck)] == ["EfficientNetB0", "BiFPN"]


def test_inference_returns_one_detection_dict_per_image():
    model = efficientdet_d0(num_classes=3, overrides=["MODEL.RETINANET.SCORE_THRESH_TEST=0.0"]).eval()
    assert isinstance(model, RetinaNet)
    images = torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8)
    sizes = torch.tensor([[128, 160], [100, 90]])
    with torch.no_grad():
        detections = model(images, sizes)
    assert len(detections) == 2
    for found, (h, w) in zip(detections, sizes.tolist()):
        assert set(found) == {"boxes", "scores", "labels"}
        boxes, scores, labels = found["boxes"], found["scores"], found["labels"]
        m = len(scores)
        assert 0 < m <= 100 and boxes.shape == (m, 4) and labels.shape == (m,)
        assert boxes.dtype == scores.dtype == torch.float32 and labels.dtype == torch.int64
        assert (labels >= 0).all() and (labels < 3).all()
        assert torch.all(scores[:-1] >= scores[1:]) and ((scores >= 0) & (scores <= 1)).all()
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
        assert boxes.min() >= 0 and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


def test_training_mode_returns_the_losses():
    model = retinanet("resnet18", num_classes=2, num_convs=1, overrides=["MODEL.FPN.OUT_CHANNELS=32"]).train()
    targets = {"boxes": [torch.tensor([[8.0, 8.0, 40.0, 48.0]])], "labels": [torch.tensor([1])]}
    losses = model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), torch.tensor([[64, 64]]), targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"} and all(v.requires_grad for v in losses.values())


def test_backbone_names_map_to_their_config_keys():
    for depth in (18, 34, 50, 101):
        model_cfg = retinanet_config(f"resnet{depth}").MODEL
        assert (model_cfg.BACKBONE.NAME, model_cfg.RESNETS.DEPTH) == ("resnet", depth)
    model_cfg = retinanet_config("efficientnet_lite0", backbone_norm="BN", pretrained_backbone=True).MODEL
    assert (model_cfg.BACKBONE.NAME, model_cfg.BACKBONE.NORM, model_cfg.BACKBONE.PRETRAINED) == (
        "efficientnet_lite0", "BN", True)
    assert retinanet_config(overrides=["MODEL.FPN.OUT_CHANNELS=128"]).MODEL.FPN.OUT_CHANNELS == 128


@pytest.mark.parametrize("call,message", [
    (lambda: retinanet("resnet152"), "backbone 'resnet152' is not one of ['resnet18', "),
    (lambda: retinanet(neck="fpm"), "neck 'fpm' is not one of ['fpn', 'twoway_fpn', 'pconv', 'bifpn']; did you mean "
                                    "'fpn'?"),
    (lambda: retinanet(norm="gn"), "MODEL.FPN.NORM 'gn' is not one of"),
    (lambda: retinanet(box_loss="GIoU"), "MODEL.RETINANET.BBOX_REG_LOSS_TYPE 'GIoU' is not one of"),
    (lambda: retinanet(pretrained_backbone=True), "no offline ImageNet weights ship for 'resnet'"),
    (lambda: retinanet(overrides=["MODEL.FPN.OUT_CHANELS=8"]), "od2.models.retinanet overrides: unknown config key"),
    (lambda: efficientdet_d0(backbone_norm="BatchNorm"), "MODEL.BACKBONE.NORM 'BatchNorm' is not one of"),
])
def test_bad_arguments_are_config_errors_naming_them(call, message):
    with pytest.raises(ConfigError) as err:
        call()
    assert message in str(err.value)


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True])
def test_num_classes_must_be_a_positive_int(num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        retinanet("resnet18", num_classes=num_classes)


def test_pretrained_backbone_loads_a_local_torchvision_file(tmp_path):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = retinanet("resnet18", neck="twoway_fpn", num_classes=2, pretrained_backbone=path)
    loaded = model.backbone.body.state_dict()  # under the C6/C7 wrapper the twoway_fpn neck asks for
    for key, value in loaded.items():
        assert torch.equal(value, reference.state_dict()[key]), key
    torch.save({"head.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="none of its 1 tensors fit the ResNetBackbone backbone"):
        retinanet("resnet18", num_classes=2, pretrained_backbone=tmp_path / "other.pth")


def test_pretrained_true_loads_the_offline_lite0_weights():
    model = retinanet("efficientnet_lite0", num_classes=2, pretrained_backbone=True)
    shipped = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.backbone.conv_stem.weight, shipped["_conv_stem.weight"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no offline ImageNet weights ship for EfficientNet-B0"):
        efficientdet_d0(pretrained_backbone=True)


def test_import_od2_stays_light():
    code = "import sys, od2, od2.config; print(sorted({'torch', 'od2.models', 'od2.modeling'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_the_neck_norm_defaults_to_the_neck_sections_default():
    bifpn = retinanet_config(neck="bifpn")
    assert (bifpn.MODEL.BIFPN.NORM, bifpn.MODEL.RETINANET.NORM) == ("GN", "GN")  # the BiFPN section's default
    fpn = retinanet_config()
    assert (fpn.MODEL.FPN.NORM, fpn.MODEL.RETINANET.NORM) == ("", "")
    assert retinanet_config(neck="bifpn", norm="BN", head_norm="").MODEL.BIFPN.NORM == "BN"
