"""Build a model from a config: small translations of config keys into constructor arguments."""

from __future__ import annotations

import logging

import torch.nn as nn

from od2.config import CfgNode
from od2.layers import FUSE_TYPES, get_norm, norm_includes_activation

from .anchors import AnchorGenerator
from .backbones import build_backbone
from .box_coder import BoxCoder
from .matcher import Matcher
from .necks import FPN
from .retinanet import RetinaNet
from .retinanet_head import RetinaNetHead

logger = logging.getLogger(__name__)


def build_backbone_from_cfg(cfg: CfgNode) -> nn.Module:
    """The backbone named by MODEL.BACKBONE.NAME with its norm (MODEL.BACKBONE.NORM)."""
    name = cfg.MODEL.BACKBONE.NAME
    norm_name = cfg.MODEL.BACKBONE.NORM

    def norm_layer(channels: int) -> nn.Module:
        return get_norm(norm_name, channels) or nn.Identity()

    if name == "resnet":
        return build_backbone(name, depth=cfg.MODEL.RESNETS.DEPTH, norm_layer=norm_layer,
                              freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
    return build_backbone(name, pretrained=cfg.MODEL.BACKBONE.PRETRAINED, norm_layer=norm_layer,
                          freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


def warn_unused_activations(cfg: CfgNode) -> None:
    """Say so when a norm that includes its activation (EvoNorm-S0) makes an ACTIVATION_FN key moot."""
    for key in ("FPN", "RETINANET"):
        section = cfg.MODEL[key]
        if norm_includes_activation(section.NORM) and section.ACTIVATION_FN not in ("NA", ""):
            logger.warning("MODEL.%s.NORM %s includes its activation: MODEL.%s.ACTIVATION_FN %r is not applied "
                           "(set it to NA to silence this)", key, section.NORM, key, section.ACTIVATION_FN)


def build_model(cfg: CfgNode, num_classes: int) -> RetinaNet:
    """RetinaNet for ``num_classes`` classes as the config describes (MODEL.RETINANET.NUM_CLASSES > 0 wins)."""
    model_cfg = cfg.MODEL
    if model_cfg.META_ARCHITECTURE != "RetinaNet":
        raise ValueError(f"MODEL.META_ARCHITECTURE {model_cfg.META_ARCHITECTURE!r} is not available; use 'RetinaNet'")
    head_cfg = model_cfg.RETINANET
    num_classes = head_cfg.NUM_CLASSES or num_classes
    warn_unused_activations(cfg)
    backbone = build_backbone_from_cfg(cfg)
    fpn_in = {name: backbone.out_channels[name] for name in model_cfg.FPN.IN_FEATURES}
    # Only build the stride-2 levels above the inputs that the head uses (unused ones would break DDP).
    top_level = max(int(name[1:]) for name in head_cfg.IN_FEATURES)
    num_extra = max(top_level - int(model_cfg.FPN.IN_FEATURES[-1][1:]), 0)
    if model_cfg.FPN.FUSE_TYPE not in FUSE_TYPES:
        raise ValueError(f"MODEL.FPN.FUSE_TYPE {model_cfg.FPN.FUSE_TYPE!r} is not one of {FUSE_TYPES}")
    neck = FPN(fpn_in, model_cfg.FPN.OUT_CHANNELS, norm=model_cfg.FPN.NORM, activation=model_cfg.FPN.ACTIVATION_FN,
               num_extra_levels=num_extra, fuse_type=model_cfg.FPN.FUSE_TYPE)
    missing = [f for f in head_cfg.IN_FEATURES if f not in neck.out_features]
    if missing:
        raise ValueError(f"MODEL.RETINANET.IN_FEATURES {missing} are not produced by the neck ({neck.out_features})")
    anchors = AnchorGenerator(model_cfg.ANCHOR_GENERATOR.SIZES, model_cfg.ANCHOR_GENERATOR.ASPECT_RATIOS,
                              [neck.strides[f] for f in head_cfg.IN_FEATURES])
    head = RetinaNetHead(model_cfg.FPN.OUT_CHANNELS, anchors.num_anchors, num_classes, len(head_cfg.IN_FEATURES),
                         num_convs=head_cfg.NUM_CONVS, norm=head_cfg.NORM, activation=head_cfg.ACTIVATION_FN,
                         prior_prob=head_cfg.PRIOR_PROB)
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
    )
    return model.to(memory_format=model.memory_format)
