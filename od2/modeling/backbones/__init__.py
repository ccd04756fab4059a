"""Bottom-up backbones: ``forward(x) -> {"C3", "C4", "C5"}`` (strides 8, 16, 32) with ``out_channels`` and
``strides`` dicts, and class attributes ``pixel_mean`` / ``pixel_std`` (0-255 RGB) matching their weights
(:class:`~od2.modeling.protocols.Backbone`). :class:`BackboneWithExtraLevels` adds C6/C7 to any of them.
:data:`BACKBONES` registers them by ``MODEL.BACKBONE.NAME``."""

from __future__ import annotations

from od2.modeling.backbones.efficientnet_lite import (
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
)
from od2.modeling.backbones.extra_levels import BackboneWithExtraLevels
from od2.modeling.backbones.registry import BACKBONES, build_backbone
from od2.modeling.backbones.resnet import ResNetBackbone
from od2.modeling.backbones.torchvision_features import EfficientNetB0, MobileNetV3Large
from od2.modeling.backbones.utils import LoadReport, convert_to_frozen_bn, load_matching_state_dict

__all__ = [
    "BACKBONES",
    "BackboneWithExtraLevels",
    "EfficientNetB0",
    "EfficientNetLite",
    "EfficientNetLite0",
    "EfficientNetLite1",
    "EfficientNetLite2",
    "LoadReport",
    "MobileNetV3Large",
    "ResNetBackbone",
    "build_backbone",
    "convert_to_frozen_bn",
    "load_matching_state_dict",
]
