"""Build a model from a config: small translations of config keys into constructor arguments.

The pieces: a bottom-up backbone (MODEL.BACKBONE.NAME, with C6/C7 from its family's MAKE_C6C7 section), a neck
(MODEL.NECK.NAME, configured by its own section: MODEL.FPN, MODEL.TWOWAYFPN, MODEL.PCONV or MODEL.BIFPN) and
the RetinaNet head on the neck's levels (MODEL.RETINANET). Backbones and necks are looked up in their
registrations (``BACKBONES``, ``NECKS``), which own their builders and config sections. :func:`convert_for_inference`
applies the opt-in inference speed-ups of the TEST section to a built model.
"""

from __future__ import annotations

import logging

import torch.nn as nn

from od2.layers import FUSE_TYPES, get_norm, norm_includes_activation
from od2.layers.activations import ACTIVATIONS
from od2.layers.norms import NO_NORM, NORMS
from od2.layers.winograd import convert_to_winograd
from od2.utils.cfg_node import CfgNode, ConfigError, check_choice

from .anchors import AnchorGenerator
from .backbones import BACKBONES, BackboneWithExtraLevels
from .backbones.extra_levels import MAKE_C6C7_CHOICES
from .box_coder import BoxCoder
from .losses import BOX_LOSS_TYPES
from .matcher import Matcher
from .necks import NECKS
from .necks.common import pyramid_levels
from .protocols import Backbone, Neck
from .registration import BackboneEntry, unique_sections
from .retinanet import RetinaNet
from .retinanet_head import RetinaNetHead

logger = logging.getLogger(__name__)

NORM_CHOICES = [*NO_NORM, *NORMS]


def config_sections() -> tuple[dict[str, dict], dict[str, dict]]:
    """The config sections the registrations own, each as section name -> defaults: (backbone families, necks).

    :func:`od2.config.schema` inserts them after MODEL.BACKBONE and MODEL.NECK.
    """
    return unique_sections(BACKBONES.values()), unique_sections(NECKS.values())


def backbone_entry(cfg: CfgNode) -> BackboneEntry:
    """The registration of MODEL.BACKBONE.NAME; ConfigError for an unknown backbone."""
    check_choice("MODEL.BACKBONE.NAME", cfg.MODEL.BACKBONE.NAME, list(BACKBONES))
    return BACKBONES[cfg.MODEL.BACKBONE.NAME]


def family_section_name(cfg: CfgNode) -> str:
    """The config section of MODEL.BACKBONE.NAME's family (``RESNETS``, ``EFFICIENTNETS``, ...)."""
    return backbone_entry(cfg).section.name


def check_model_choices(cfg: CfgNode) -> None:
    """ConfigError naming the key, the value and the allowed values for each choice key of the model that is not
    one of its choices: names, norms, activations, fusions and the box loss (which the model would otherwise
    reject only at its first training step)."""
    model = cfg.MODEL
    check_choice("MODEL.BACKBONE.NORM", model.BACKBONE.NORM, NORM_CHOICES)
    # the section names come from the registrations of MODEL.BACKBONE.NAME and MODEL.NECK.NAME, checked first
    for name in (family_section_name(cfg), neck_section_name(cfg), "RETINANET"):
        section = model[name]
        check_choice(f"MODEL.{name}.NORM", section.NORM, NORM_CHOICES)
        check_choice(f"MODEL.{name}.ACTIVATION_FN", section.ACTIVATION_FN, list(ACTIVATIONS))
        if "FUSE_TYPE" in section:
            check_choice(f"MODEL.{name}.FUSE_TYPE", section.FUSE_TYPE, list(FUSE_TYPES))
    check_choice("MODEL.RETINANET.BBOX_REG_LOSS_TYPE", model.RETINANET.BBOX_REG_LOSS_TYPE, list(BOX_LOSS_TYPES))


def build_bottom_up(cfg: CfgNode) -> Backbone:
    """The backbone named by MODEL.BACKBONE.NAME with its norm (MODEL.BACKBONE.NORM) and FREEZE_AT."""
    entry = backbone_entry(cfg)
    norm_name = cfg.MODEL.BACKBONE.NORM

    def norm_layer(channels: int) -> nn.Module:
        return get_norm(norm_name, channels) or nn.Identity()

    if cfg.MODEL.BACKBONE.PRETRAINED and not entry.ships_weights:
        shipped = [name for name, e in BACKBONES.items() if e.ships_weights]
        raise ConfigError(f"MODEL.BACKBONE.PRETRAINED: no offline ImageNet weights ship for {entry.name!r} (only "
                          f"{', '.join(shipped)}); name torchvision's in MODEL.WEIGHTS instead, e.g. "
                          "torchvision://ResNet50_Weights.IMAGENET1K_V1, or give a local state_dict")
    return entry.build(cfg.MODEL[entry.section.name], norm_layer, cfg.MODEL.BACKBONE.FREEZE_AT,
                       cfg.MODEL.BACKBONE.PRETRAINED)


def build_backbone_from_cfg(cfg: CfgNode) -> Backbone:
    """The bottom-up backbone, wrapped in :class:`BackboneWithExtraLevels` when its MAKE_C6C7 asks for C6/C7."""
    body = build_bottom_up(cfg)
    family = family_section_name(cfg)
    section = cfg.MODEL[family]
    check_choice(f"MODEL.{family}.MAKE_C6C7", section.MAKE_C6C7, list(MAKE_C6C7_CHOICES))
    num_levels = MAKE_C6C7_CHOICES[section.MAKE_C6C7]
    if not num_levels:
        return body
    return BackboneWithExtraLevels(body, num_levels, section.OUT_CHANNELS, section.NORM, section.ACTIVATION_FN)


def neck_section_name(cfg: CfgNode) -> str:
    """The config section of MODEL.NECK.NAME (``FPN``, ``TWOWAYFPN``, ...); ConfigError for an unknown neck."""
    name = cfg.MODEL.NECK.NAME
    check_choice("MODEL.NECK.NAME", name, list(NECKS))
    return NECKS[name].section.name


def build_neck(cfg: CfgNode, backbone: Backbone) -> Neck:
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
    family = family_section_name(cfg)
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
    if num_extra and not NECKS[name].makes_levels:
        raise ConfigError(f"MODEL.RETINANET.IN_FEATURES reaches P{top_level}, above MODEL.{section_name}."
                          f"IN_FEATURES; the {name} neck only has levels for its inputs: give it C6/C7 "
                          "(MAKE_C6C7=C6C7 and IN_FEATURES up to C7)")
    return NECKS[name].build(section, in_channels, num_extra)


def warn_unused_activations(cfg: CfgNode) -> None:
    """Say so when a norm that includes its activation (EvoNorm-S0) makes an ACTIVATION_FN key moot."""
    keys = [neck_section_name(cfg), "RETINANET"]
    family = family_section_name(cfg)
    if cfg.MODEL[family].MAKE_C6C7:
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
    check_model_choices(cfg)
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
                              [neck.strides[f] for f in head_cfg.IN_FEATURES],
                              offset=model_cfg.ANCHOR_GENERATOR.OFFSET, round_cells=model_cfg.ANCHOR_GENERATOR.ROUND)
    head = RetinaNetHead(head_channels.pop(), anchors.num_anchors, num_classes, len(head_cfg.IN_FEATURES),
                         num_convs=head_cfg.NUM_CONVS, norm=head_cfg.NORM, activation=head_cfg.ACTIVATION_FN,
                         prior_prob=head_cfg.PRIOR_PROB, separable=head_cfg.SEPARABLE_CONV)
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


COMPILE_MODES = ["", "default", "reduce-overhead", "max-autotune"]


def convert_for_inference(model: nn.Module, cfg: CfgNode) -> nn.Module:
    """``model``, converted in place to run the inference speed-ups that the config's test-time keys ask for
    (TEST.WINOGRAD: :func:`od2.layers.winograd.convert_to_winograd`; TEST.COMPILE: the model's
    ``compile_inference(mode, canvas)``, :meth:`RetinaNet.compile_inference`, on the :func:`fixed_test_canvas`
    of INPUT.MAX_SIZE_TEST). Conversions keep the state_dict and compute
    training, GPU and export passes exactly as before; compiled inference gives the eager detections within
    floating-point tolerance. Converting again is a no-op."""
    check_choice("TEST.COMPILE", cfg.TEST.COMPILE, COMPILE_MODES)
    if cfg.TEST.WINOGRAD:
        convert_to_winograd(model)
    if cfg.TEST.COMPILE:
        if not hasattr(model, "compile_inference"):
            raise ConfigError(f"TEST.COMPILE={cfg.TEST.COMPILE!r}: {type(model).__name__} has no compiled inference "
                              "path (compile_inference); set TEST.COMPILE to \"\"")
        model.compile_inference(cfg.TEST.COMPILE, fixed_test_canvas(cfg.INPUT.MAX_SIZE_TEST,
                                                                    cfg.INPUT.SIZE_DIVISIBILITY))
    return model


def fixed_test_canvas(max_size: int, size_divisibility: int) -> tuple[int, int]:
    """(H, W) of the one canvas that holds every test image resized to a long side of at most ``max_size``, in
    either orientation: ``max_size`` rounded up to a multiple of ``size_divisibility`` (if > 1), on both sides."""
    side = -(-max_size // size_divisibility) * size_divisibility if size_divisibility > 1 else max_size
    return side, side
