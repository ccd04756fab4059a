"""Build a model from a config: small translations of config keys into constructor arguments.

The pieces: a bottom-up backbone (MODEL.BACKBONE.NAME, with C6/C7 from its family's MAKE_C6C7 section), a neck
(MODEL.NECK.NAME, configured by its own section: MODEL.FPN, MODEL.TWOWAYFPN, MODEL.PCONV or MODEL.BIFPN) and
the RetinaNet head on the neck's levels (MODEL.RETINANET).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch.nn as nn

from od2.config import CfgNode, ConfigError
from od2.layers import FUSE_TYPES, get_norm, norm_includes_activation

from .anchors import AnchorGenerator
from .backbones import BackboneWithExtraLevels, build_backbone
from .backbones.extra_levels import MAKE_C6C7_CHOICES
from .box_coder import BoxCoder
from .matcher import Matcher
from .necks import FPN, BiFPN, PConv, TwoWayFPN
from .necks.common import pyramid_levels
from .retinanet import RetinaNet
from .retinanet_head import RetinaNetHead

logger = logging.getLogger(__name__)

# Backbone name -> the config section holding its family's MAKE_C6C7 keys (the original's layout).
BACKBONE_SECTIONS = {
    "resnet": "RESNETS",
    "efficientnet_lite0": "EFFICIENTNETS",
    "efficientnet_b0": "EFFICIENTNETS",
    "mobilenet_v3_large": "MOBILENETS",
}


def build_bottom_up(cfg: CfgNode) -> nn.Module:
    """The backbone named by MODEL.BACKBONE.NAME with its norm (MODEL.BACKBONE.NORM) and FREEZE_AT."""
    name = cfg.MODEL.BACKBONE.NAME
    norm_name = cfg.MODEL.BACKBONE.NORM

    def norm_layer(channels: int) -> nn.Module:
        return get_norm(norm_name, channels) or nn.Identity()

    kwargs = {"norm_layer": norm_layer, "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT}
    if name == "resnet":
        kwargs["depth"] = cfg.MODEL.RESNETS.DEPTH
    elif name == "efficientnet_lite0":
        kwargs["pretrained"] = cfg.MODEL.BACKBONE.PRETRAINED
    elif cfg.MODEL.BACKBONE.PRETRAINED:
        raise ConfigError(f"MODEL.BACKBONE.PRETRAINED: no offline ImageNet weights ship for {name!r} (only "
                          "efficientnet_lite0); give a local torchvision state_dict as MODEL.WEIGHTS instead")
    return build_backbone(name, **kwargs)


def build_backbone_from_cfg(cfg: CfgNode) -> nn.Module:
    """The bottom-up backbone, wrapped in :class:`BackboneWithExtraLevels` when its MAKE_C6C7 asks for C6/C7."""
    body = build_bottom_up(cfg)
    section_name = BACKBONE_SECTIONS.get(cfg.MODEL.BACKBONE.NAME)
    if section_name is None:
        return body
    section = cfg.MODEL[section_name]
    if section.MAKE_C6C7 not in MAKE_C6C7_CHOICES:
        raise ConfigError(f"MODEL.{section_name}.MAKE_C6C7 {section.MAKE_C6C7!r} is not one of "
                          f"{list(MAKE_C6C7_CHOICES)}")
    num_levels = MAKE_C6C7_CHOICES[section.MAKE_C6C7]
    if not num_levels:
        return body
    return BackboneWithExtraLevels(body, num_levels, section.OUT_CHANNELS, section.NORM, section.ACTIVATION_FN)


def _build_fpn(section: CfgNode, in_channels: dict[str, int], num_extra: int) -> nn.Module:
    if section.FUSE_TYPE not in FUSE_TYPES:
        raise ConfigError(f"MODEL.FPN.FUSE_TYPE {section.FUSE_TYPE!r} is not one of {FUSE_TYPES}")
    return FPN(in_channels, section.OUT_CHANNELS, norm=section.NORM, activation=section.ACTIVATION_FN,
               num_extra_levels=num_extra, fuse_type=section.FUSE_TYPE)


def _build_twoway_fpn(section: CfgNode, in_channels: dict[str, int], num_extra: int) -> nn.Module:
    if section.FUSE_TYPE not in FUSE_TYPES:
        raise ConfigError(f"MODEL.TWOWAYFPN.FUSE_TYPE {section.FUSE_TYPE!r} is not one of {FUSE_TYPES}")
    return TwoWayFPN(in_channels, section.OUT_CHANNELS, norm=section.NORM, activation=section.ACTIVATION_FN,
                     fuse_type=section.FUSE_TYPE)


def _build_pconv(section: CfgNode, in_channels: dict[str, int], num_extra: int) -> nn.Module:
    return PConv(in_channels, section.OUT_CHANNELS, norm=section.NORM, activation=section.ACTIVATION_FN,
                 num_layers=section.NUM_CONVS)


def _build_bifpn(section: CfgNode, in_channels: dict[str, int], num_extra: int) -> nn.Module:
    return BiFPN(in_channels, section.OUT_CHANNELS, norm=section.NORM, activation=section.ACTIVATION_FN,
                 num_cells=section.REPEAT, separable=section.SEPARABLE_CONV,
                 downsample_kernel=section.DOWNSAMPLE_KERNEL, num_extra_levels=num_extra)


# Neck name -> (config section, builder(section, in_channels, number of levels to add above the inputs)).
NECKS: dict[str, tuple[str, Callable[[CfgNode, dict[str, int], int], nn.Module]]] = {
    "fpn": ("FPN", _build_fpn),
    "twoway_fpn": ("TWOWAYFPN", _build_twoway_fpn),
    "pconv": ("PCONV", _build_pconv),
    "bifpn": ("BIFPN", _build_bifpn),
}
# Necks that can make levels above their inputs themselves; the others need the backbone's C6/C7.
NECKS_MAKING_LEVELS = ("fpn", "bifpn")


def neck_section_name(cfg: CfgNode) -> str:
    """The config section of MODEL.NECK.NAME (``FPN``, ``TWOWAYFPN``, ...); ConfigError for an unknown neck."""
    name = cfg.MODEL.NECK.NAME
    if name not in NECKS:
        raise ConfigError(f"MODEL.NECK.NAME {name!r} is not one of {sorted(NECKS)}")
    return NECKS[name][0]


def build_neck(cfg: CfgNode, backbone: nn.Module) -> nn.Module:
    """The neck MODEL.NECK.NAME on the backbone levels of its section's IN_FEATURES, up to the head's top level.

    Every backbone level the config makes must feed the neck: a level nobody reads leaves parameters without
    gradients, which DistributedDataParallel rejects at the second iteration.
    """
    name = cfg.MODEL.NECK.NAME
    section_name = neck_section_name(cfg)
    section = cfg.MODEL[section_name]
    try:
        levels = pyramid_levels(list(section.IN_FEATURES))
    except ValueError as err:
        raise ConfigError(f"MODEL.{section_name}.IN_FEATURES: {err}") from None
    family = BACKBONE_SECTIONS.get(cfg.MODEL.BACKBONE.NAME, "RESNETS")
    absent = [f for f in section.IN_FEATURES if f not in backbone.out_channels]
    if absent:
        raise ConfigError(f"MODEL.{section_name}.IN_FEATURES asks for {absent}, but the backbone gives "
                          f"{list(backbone.out_channels)}; C6/C7 come from MODEL.{family}.MAKE_C6C7=C6C7")
    unread = [f for f in getattr(backbone, "new_levels", []) if f not in section.IN_FEATURES]
    if unread:
        raise ConfigError(f"MODEL.{family}.MAKE_C6C7 makes {unread}, but MODEL.{section_name}.IN_FEATURES "
                          f"{list(section.IN_FEATURES)} does not use them (their convs would never train); add them "
                          f"or set MODEL.{family}.MAKE_C6C7 to \"\"")
    in_channels = {f: backbone.out_channels[f] for f in section.IN_FEATURES}
    # Only build the levels above the inputs that the head uses (unused ones would break DDP).
    try:
        top_level = max(int(f[1:]) for f in cfg.MODEL.RETINANET.IN_FEATURES if f.startswith("P"))
    except ValueError:
        raise ConfigError("MODEL.RETINANET.IN_FEATURES must name pyramid levels like [P3, P4, P5, P6, P7]; got "
                          f"{list(cfg.MODEL.RETINANET.IN_FEATURES)}") from None
    num_extra = max(top_level - levels[-1], 0)
    if num_extra and name not in NECKS_MAKING_LEVELS:
        raise ConfigError(f"MODEL.RETINANET.IN_FEATURES reaches P{top_level}, above MODEL.{section_name}."
                          f"IN_FEATURES; the {name} neck only has levels for its inputs: give it C6/C7 "
                          "(MAKE_C6C7=C6C7 and IN_FEATURES up to C7)")
    return NECKS[name][1](section, in_channels, num_extra)


def warn_unused_activations(cfg: CfgNode) -> None:
    """Say so when a norm that includes its activation (EvoNorm-S0) makes an ACTIVATION_FN key moot."""
    keys = [neck_section_name(cfg), "RETINANET"]
    family = BACKBONE_SECTIONS.get(cfg.MODEL.BACKBONE.NAME)
    if family and cfg.MODEL[family].MAKE_C6C7:
        keys.append(family)
    for key in keys:
        section = cfg.MODEL[key]
        if norm_includes_activation(section.NORM) and section.ACTIVATION_FN not in ("NA", ""):
            logger.warning("MODEL.%s.NORM %s includes its activation: MODEL.%s.ACTIVATION_FN %r is not applied "
                           "(set it to NA to silence this)", key, section.NORM, key, section.ACTIVATION_FN)


def build_model(cfg: CfgNode, num_classes: int) -> RetinaNet:
    """RetinaNet for ``num_classes`` classes as the config describes (MODEL.RETINANET.NUM_CLASSES > 0 wins)."""
    model_cfg = cfg.MODEL
    if model_cfg.META_ARCHITECTURE != "RetinaNet":
        raise ConfigError(f"MODEL.META_ARCHITECTURE {model_cfg.META_ARCHITECTURE!r} is not available; "
                          "use 'RetinaNet'")
    head_cfg = model_cfg.RETINANET
    num_classes = head_cfg.NUM_CLASSES or num_classes
    warn_unused_activations(cfg)
    backbone = build_backbone_from_cfg(cfg)
    neck = build_neck(cfg, backbone)
    missing = [f for f in head_cfg.IN_FEATURES if f not in neck.out_features]
    if missing:
        raise ConfigError(f"MODEL.RETINANET.IN_FEATURES {missing} are not produced by the neck "
                          f"({neck.out_features})")
    unused = [f for f in neck.out_features if f not in head_cfg.IN_FEATURES]
    if unused:
        raise ConfigError(f"the neck makes {unused} but MODEL.RETINANET.IN_FEATURES {list(head_cfg.IN_FEATURES)} "
                          "does not use them (their weights would never train, and DDP fails on that); drop the "
                          f"matching inputs from MODEL.{neck_section_name(cfg)}.IN_FEATURES or add the levels to "
                          "the head")
    head_channels = {neck.out_channels[f] for f in head_cfg.IN_FEATURES}
    if len(head_channels) != 1:
        raise ConfigError(f"the head's levels {head_cfg.IN_FEATURES} have different channel counts {head_channels}")
    anchors = AnchorGenerator(model_cfg.ANCHOR_GENERATOR.SIZES, model_cfg.ANCHOR_GENERATOR.ASPECT_RATIOS,
                              [neck.strides[f] for f in head_cfg.IN_FEATURES])
    head = RetinaNetHead(head_channels.pop(), anchors.num_anchors, num_classes, len(head_cfg.IN_FEATURES),
                         num_convs=head_cfg.NUM_CONVS, norm=head_cfg.NORM, activation=head_cfg.ACTIVATION_FN,
                         prior_prob=head_cfg.PRIOR_PROB, separable=head_cfg.SEPARABLE_CONV,
                         winograd=head_cfg.WINOGRAD)
    model = RetinaNet(
        backbone, neck, head, head_cfg.IN_FEATURES, anchors,
        BoxCoder(tuple(head_cfg.BBOX_REG_WEIGHTS)),
        Matcher(tuple(head_cfg.IOU_THRESHOLDS), head_cfg.ALLOW_LOW_QUALITY_MATCHES),
        pixel_mean=model_cfg.PIXEL_MEAN or list(backbone.pixel_mean),
        pixel_std=model_cfg.PIXEL_STD or list(backbone.pixel_std),
        focal_alpha=head_cfg.FOCAL_LOSS_ALPHA, focal_gamma=head_cfg.FOCAL_LOSS_GAMMA,
        box_loss_type=head_cfg.BBOX_REG_LOSS_TYPE, smooth_l1_beta=head_cfg.SMOOTH_L1_LOSS_BETA,
        box_loss_scale=head_cfg.BOX_REG_LOSS_SCALE, score_thresh=head_cfg.SCORE_THRESH_TEST,
        topk_candidates=head_cfg.TOPK_CANDIDATES_TEST, nms_thresh=head_cfg.NMS_THRESH_TEST,
        max_detections=cfg.TEST.DETECTIONS_PER_IMAGE, channels_last=model_cfg.CHANNELS_LAST,
        small_box_area=cfg.INPUT.STITCHER.SMALL_AREA if cfg.INPUT.STITCHER.ENABLED else 0.0,
    )
    return model.to(memory_format=model.memory_format)
