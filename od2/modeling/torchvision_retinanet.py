"""torchvision RetinaNet state_dicts (``retinanet_resnet50_fpn`` and ``..._v2``) as od2 RetinaNet weights.

The od2 layout is configs/coco/torchvision/RetinaNet-R50-FPN-v1.yaml / -v2.yaml. Every tensor of the file has one
place in it:

==========================================================  ====================================================
torchvision                                                 od2
==========================================================  ====================================================
``backbone.body.<resnet key>``                              ``backbone.<resnet key>`` (``num_batches_tracked``
                                                            dropped: od2's FrozenBN keeps no count)
``backbone.fpn.inner_blocks.<i>.0.*``                       ``neck.lateral.<i>.*``
``backbone.fpn.layer_blocks.<i>.0.*``                       ``neck.output.<i>.conv.*``
``backbone.fpn.extra_blocks.p6.*`` / ``p7.*``               ``neck.extra.0.conv.*`` / ``neck.extra.1.conv.*``
``head.classification_head.conv.<j>.0.*``                   ``head.cls_tower.convs.<j>.*``
``head.classification_head.conv.<j>.1.*`` (v2's GroupNorm)  ``head.cls_tower.norm_acts.<j>.<level>.norm.*`` for
                                                            each of the 5 levels (torchvision shares one norm
                                                            across levels, od2 has one per level)
``head.classification_head.cls_logits.*``                   ``head.cls_score.*``, the 91-way COCO_V1 predictor
                                                            reduced to COCO's 80 classes
``head.regression_head.conv`` / ``bbox_reg``                ``head.box_tower`` / ``head.bbox_pred`` as above
==========================================================  ====================================================

torchvision's COCO_V1 predictors have one output per COCO category id 0..90 (``__background__`` at 0 and ten
``N/A`` slots never trained positive), anchor-major: row ``a * 91 + k`` is anchor ``a``, category id ``k``, the
same anchor-major layout as od2's ``head.cls_score`` with 80 classes.
"""

from __future__ import annotations

import re

import torch

from od2.utils.coco_categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES

__all__ = ["FROZEN_BN_EPS", "TORCHVISION_COCO_SLOTS", "convert_torchvision_retinanet", "is_torchvision_retinanet"]

TORCHVISION_COCO_SLOTS = 91  # category ids 0..90, the layout of torchvision's COCO detection weights
NUM_LEVELS = 5  # torchvision's RetinaNet head always runs on P3..P7
FROZEN_BN_EPS = 1e-5  # od2's FrozenBatchNorm2d (torchvision's default)

_HEAD_BRANCHES = {"classification_head": ("cls_tower", "cls_logits", "cls_score"),
                  "regression_head": ("box_tower", "bbox_reg", "bbox_pred")}
_FPN_KEY = re.compile(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.0\.(weight|bias)")
_EXTRA_KEY = re.compile(r"backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)")
_TOWER_KEY = re.compile(r"head\.(classification_head|regression_head)\.conv\.(\d+)\.([01])\.(weight|bias)")
_PREDICTOR_KEY = re.compile(r"head\.(classification_head|regression_head)\.(cls_logits|bbox_reg)\.(weight|bias)")


def is_torchvision_retinanet(state_dict: dict) -> bool:
    """Whether ``state_dict`` is a torchvision RetinaNet's (its class predictor and FPN keys)."""
    return "head.classification_head.cls_logits.weight" in state_dict and any(
        isinstance(key, str) and key.startswith("backbone.fpn.") for key in state_dict)


def convert_torchvision_retinanet(state_dict: dict[str, torch.Tensor], backbone_bn_eps: float = FROZEN_BN_EPS
                                  ) -> dict:
    """An od2 checkpoint dict from a torchvision RetinaNet ``state_dict``.

    Args:
        state_dict: torchvision's ``retinanet_resnet50_fpn(_v2)`` weights, any class count.
        backbone_bn_eps: the eps the file's backbone norms ran with. torchvision loads its v1 COCO_V1 file with eps 0
            (``overwrite_eps``); od2's FrozenBN uses 1e-5, so the difference is moved into the running variances,
            which gives the same ``1 / sqrt(var + eps)``.
    Returns:
        ``{"model": od2 state_dict}``; for a 91-slot COCO predictor also ``class_names`` and ``category_ids``
        (COCO's 80 names and ids, :mod:`od2.utils.coco_categories`), with the predictor reduced to those 80.
    Raises:
        ValueError: a key that has no place in the od2 layout, named.
    """
    num_anchors = state_dict["head.regression_head.bbox_reg.bias"].numel() // 4
    num_slots = state_dict["head.classification_head.cls_logits.bias"].numel() // num_anchors
    coco = num_slots == TORCHVISION_COCO_SLOTS
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("backbone.body."):
            name = "backbone." + key[len("backbone.body."):]
            if name.endswith("running_var") and backbone_bn_eps != FROZEN_BN_EPS:
                tensor = tensor + (backbone_bn_eps - FROZEN_BN_EPS)
            converted[name] = tensor
        elif match := _FPN_KEY.fullmatch(key):
            kind, index, param = match.groups()
            converted[f"neck.{'lateral' if kind == 'inner_blocks' else 'output'}.{index}"
                      f"{'' if kind == 'inner_blocks' else '.conv'}.{param}"] = tensor
        elif match := _EXTRA_KEY.fullmatch(key):
            level, param = match.groups()
            converted[f"neck.extra.{0 if level == 'p6' else 1}.conv.{param}"] = tensor
        elif match := _TOWER_KEY.fullmatch(key):
            branch, index, part, param = match.groups()
            tower = _HEAD_BRANCHES[branch][0]
            if part == "0":
                converted[f"head.{tower}.convs.{index}.{param}"] = tensor
            else:  # one shared norm in torchvision, a copy per level in od2
                for level in range(NUM_LEVELS):
                    converted[f"head.{tower}.norm_acts.{index}.{level}.norm.{param}"] = tensor.clone()
        elif match := _PREDICTOR_KEY.fullmatch(key):
            branch, _, param = match.groups()
            if branch == "classification_head" and coco:
                tensor = _coco_rows(tensor, num_anchors)
            converted[f"head.{_HEAD_BRANCHES[branch][2]}.{param}"] = tensor
        else:
            raise ValueError(f"torchvision RetinaNet weights: the key {key!r} has no place in od2's layout "
                             "(configs/coco/torchvision/RetinaNet-R50-FPN-v1.yaml / -v2.yaml)")
    checkpoint: dict = {"model": converted}
    if coco:
        checkpoint.update(class_names=list(COCO_CLASS_NAMES), category_ids=list(COCO_CATEGORY_IDS))
    return checkpoint


def _coco_rows(tensor: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """The rows of COCO's 80 category ids of an anchor-major predictor [A * 91, ...] -> [A * 80, ...]."""
    per_anchor = tensor.reshape(num_anchors, TORCHVISION_COCO_SLOTS, *tensor.shape[1:])
    return per_anchor[:, list(COCO_CATEGORY_IDS)].reshape(num_anchors * len(COCO_CATEGORY_IDS), *tensor.shape[1:])
