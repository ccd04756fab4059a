"""Bottom-up backbones: ``forward(x) -> {"C3", "C4", "C5"}`` (strides 8, 16, 32) with ``out_channels`` and
``strides`` dicts, and class attributes ``pixel_mean`` / ``pixel_std`` (0-255 RGB) matching their weights.
:class:`BackboneWithExtraLevels` adds C6/C7 to any of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from od2.modeling.backbones.efficientnet_lite import EfficientNetLite0
from od2.modeling.backbones.extra_levels import BackboneWithExtraLevels
from od2.modeling.backbones.resnet import ResNetBackbone
from od2.modeling.backbones.torchvision_features import EfficientNetB0, MobileNetV3Large
from od2.modeling.backbones.utils import LoadReport, convert_to_frozen_bn, load_matching_state_dict

__all__ = [
    "BACKBONES",
    "BackboneWithExtraLevels",
    "EfficientNetB0",
    "EfficientNetLite0",
    "LoadReport",
    "MobileNetV3Large",
    "ResNetBackbone",
    "build_backbone",
    "convert_to_frozen_bn",
    "load_matching_state_dict",
]

# Name -> backbone class; each class carries its default pixel_mean / pixel_std, readable before building.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet": ResNetBackbone,
    "efficientnet_lite0": EfficientNetLite0,
    "efficientnet_b0": EfficientNetB0,
    "mobilenet_v3_large": MobileNetV3Large,
}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` with constructor ``kwargs``.

    ``build_backbone("resnet", depth=50, freeze_at=2)``, ``build_backbone("efficientnet_lite0", pretrained=True)``.
    Raises ``ValueError`` listing the valid names for an unknown ``name``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)
