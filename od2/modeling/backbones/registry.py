"""The registered backbones: ``MODEL.BACKBONE.NAME`` -> :class:`~od2.modeling.registration.BackboneEntry`.

Adding a backbone: its module (a class satisfying :class:`~od2.modeling.protocols.Backbone`) and one entry in
:data:`BACKBONES` with its builder from config and its family's config section.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from od2.modeling.backbones.efficientnet_lite import EfficientNetLite0, EfficientNetLite1, EfficientNetLite2
from od2.modeling.backbones.extra_levels import C6C7_DEFAULTS
from od2.modeling.backbones.resnet import RESNET_DEPTHS, ResNetBackbone
from od2.modeling.backbones.torchvision_features import EfficientNetB0, MobileNetV3Large
from od2.modeling.protocols import Backbone
from od2.modeling.registration import BackboneEntry, ConfigSection
from od2.utils.cfg_node import CfgNode, check_choice

__all__ = ["BACKBONES", "build_backbone"]

# One section per backbone family, as in the original: its C6/C7 keys and the family's own.
RESNETS = ConfigSection("RESNETS", {"DEPTH": 50, **C6C7_DEFAULTS})
EFFICIENTNETS = ConfigSection("EFFICIENTNETS", C6C7_DEFAULTS)
MOBILENETS = ConfigSection("MOBILENETS", C6C7_DEFAULTS)

NormFactory = Callable[[int], nn.Module]


def _resnet(section: CfgNode, norm_layer: NormFactory, freeze_at: int, pretrained: bool) -> Backbone:
    check_choice("MODEL.RESNETS.DEPTH", section.DEPTH, RESNET_DEPTHS)
    return ResNetBackbone(section.DEPTH, norm_layer, freeze_at)


def _efficientnet_lite0(section: CfgNode, norm_layer: NormFactory, freeze_at: int, pretrained: bool) -> Backbone:
    return EfficientNetLite0(pretrained, norm_layer, freeze_at=freeze_at)


def _efficientnet_lite1(section: CfgNode, norm_layer: NormFactory, freeze_at: int, pretrained: bool) -> Backbone:
    return EfficientNetLite1(pretrained, norm_layer, freeze_at=freeze_at)


def _efficientnet_lite2(section: CfgNode, norm_layer: NormFactory, freeze_at: int, pretrained: bool) -> Backbone:
    return EfficientNetLite2(pretrained, norm_layer, freeze_at=freeze_at)


def _efficientnet_b0(section: CfgNode, norm_layer: NormFactory, freeze_at: int, pretrained: bool) -> Backbone:
    return EfficientNetB0(norm_layer, freeze_at)


def _mobilenet_v3_large(section: CfgNode, norm_layer: NormFactory, freeze_at: int, pretrained: bool) -> Backbone:
    return MobileNetV3Large(norm_layer, freeze_at)


BACKBONES: dict[str, BackboneEntry] = {
    entry.name: entry
    for entry in (
        BackboneEntry("resnet", ResNetBackbone, RESNETS, _resnet),
        BackboneEntry("efficientnet_lite0", EfficientNetLite0, EFFICIENTNETS, _efficientnet_lite0,
                      ships_weights=True),
        BackboneEntry("efficientnet_lite1", EfficientNetLite1, EFFICIENTNETS, _efficientnet_lite1,
                      ships_weights=True),
        BackboneEntry("efficientnet_lite2", EfficientNetLite2, EFFICIENTNETS, _efficientnet_lite2,
                      ships_weights=True),
        BackboneEntry("efficientnet_b0", EfficientNetB0, EFFICIENTNETS, _efficientnet_b0),
        BackboneEntry("mobilenet_v3_large", MobileNetV3Large, MOBILENETS, _mobilenet_v3_large),
    )
}


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name`` with constructor ``kwargs``.

    ``build_backbone("resnet", depth=50, freeze_at=2)``, ``build_backbone("efficientnet_lite0", pretrained=True)``.
    Raises ``ValueError`` listing the valid names for an unknown ``name``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name].constructor(**kwargs)
