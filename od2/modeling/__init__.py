"""Models: RetinaNet (and EfficientDet, a RetinaNet with a BiFPN neck and separable head) from registered
backbones and necks.

``build_model(cfg, num_classes)`` builds one from a config; :mod:`od2.models` builds the log's families without
YAML. :class:`Backbone` and :class:`Neck` are the protocols a new backbone or neck implements, registered in
``BACKBONES`` / ``NECKS``.
"""

from .backbones import (
    BACKBONES,
    BackboneWithExtraLevels,
    EfficientNetB0,
    EfficientNetLite0,
    MobileNetV3Large,
    ResNetBackbone,
    build_backbone,
)
from .build import build_model
from .necks import FPN, NECKS, BiFPN, PConv, TwoWayFPN
from .protocols import Backbone, Neck
from .registration import BackboneEntry, ConfigSection, NeckEntry
from .retinanet import RetinaNet
from .retinanet_head import RetinaNetHead

__all__ = [
    "BACKBONES",
    "FPN",
    "NECKS",
    "Backbone",
    "BackboneEntry",
    "BackboneWithExtraLevels",
    "BiFPN",
    "ConfigSection",
    "EfficientNetB0",
    "EfficientNetLite0",
    "MobileNetV3Large",
    "Neck",
    "NeckEntry",
    "PConv",
    "ResNetBackbone",
    "RetinaNet",
    "RetinaNetHead",
    "TwoWayFPN",
    "build_backbone",
    "build_model",
]
