"""od2's RetinaNet-R50-FPN and torchvision's, built to do the same work: same classes, anchors per cell and
sizes, input size, norms, frozen stages, test-time thresholds and detections per image.

Two settings of the backbone's BatchNorms (``bn``):
- ``"BN"``: trainable BatchNorm and every stage trained: ``retinanet_resnet50_fpn(weights=None,
  weights_backbone=None)`` exactly as torchvision builds it; od2 with ``MODEL.BACKBONE.NORM=BN``.
- ``"FrozenBN"``: frozen BatchNorm, stem and res2 frozen: the fine-tuning setup, which torchvision builds when
  given ImageNet backbone weights (here without loading any); od2 with ``FrozenBN`` and ``FREEZE_AT=2``.

Both networks get the same random classification bias around logit(0.05): with the usual prior of 0.01 no
score passes the 0.05 test threshold and postprocessing would do no work at all. With it, about half of the
(anchor, class) channels pass on every level, so the top-k, decoding and NMS run on full candidate lists, as on
a busy image with a trained model. Weights are random; nothing is downloaded.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection import retinanet_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from od2.config import load_config, resolve_config
from od2.modeling.build import build_model

CONFIG = resolve_config("Base-RetinaNet.yaml")
NUM_CLASSES = 80
SHORT_SIDE, LONG_SIDE = 576, 768  # a 4:3 COCO image at the log's test size
BN_SETTINGS = ("BN", "FrozenBN")
CANDIDATE_SCORE = 0.05


def od2_retinanet(bn: str) -> nn.Module:
    """od2's RetinaNet-R50-FPN from configs/Base-RetinaNet.yaml (no norm in FPN and head, as torchvision's)."""
    if bn not in BN_SETTINGS:
        raise ValueError(f"bn must be one of {BN_SETTINGS}, got {bn!r}")
    overrides = ["MODEL.BACKBONE.NORM=BN"] if bn == "BN" else ["MODEL.BACKBONE.NORM=FrozenBN",
                                                                "MODEL.BACKBONE.FREEZE_AT=2"]
    cfg = load_config(CONFIG, overrides)
    return build_model(cfg, NUM_CLASSES)


def torchvision_retinanet(bn: str, anchor_sizes: list[list[float]], short_side: int = SHORT_SIDE) -> nn.Module:
    """torchvision's RetinaNet-R50-FPN (v1: P6 from P5), random weights, od2's anchor sizes (torchvision rounds
    the cell anchors to whole pixels), 100 detections per image as COCO evaluation uses. Its transform resizes
    images to ``short_side``: give it the short side of the images it will get."""
    test_settings = dict(min_size=short_side, max_size=1333, score_thresh=0.05, nms_thresh=0.5,
                         topk_candidates=1000, detections_per_img=100)
    anchors = TorchvisionAnchorGenerator(tuple(tuple(s) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    if bn == "BN":
        return retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                      anchor_generator=anchors, **test_settings)
    if bn != "FrozenBN":
        raise ValueError(f"bn must be one of {BN_SETTINGS}, got {bn!r}")
    # What retinanet_resnet50_fpn builds when given backbone weights: FrozenBN, 3 trainable stages.
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                                   trainable_layers=3, returned_layers=[2, 3, 4],
                                   extra_blocks=LastLevelP6P7(256, 256))
    return TorchvisionRetinaNet(backbone, NUM_CLASSES, anchor_generator=anchors, **test_settings)


def retinanet_pair(bn: str, short_side: int = SHORT_SIDE, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(od2 model, torchvision model) with the same classification bias (see the module docstring), for images
    of short side ``short_side``."""
    ours = od2_retinanet(bn)
    sizes = [[float(s) for s in level] for level in load_config(CONFIG).MODEL.ANCHOR_GENERATOR.SIZES]
    theirs = torchvision_retinanet(bn, sizes, short_side)
    num_outputs = ours.head.cls_score.bias.numel()
    generator = torch.Generator().manual_seed(seed)
    bias = torch.randn(num_outputs, generator=generator) + math.log(CANDIDATE_SCORE / (1 - CANDIDATE_SCORE))
    with torch.no_grad():
        ours.head.cls_score.bias.copy_(bias)
        theirs.head.classification_head.cls_logits.bias.copy_(bias)
    return ours, theirs


def random_batch(batch: int, seed: int = 0, height: int = SHORT_SIDE, width: int = LONG_SIDE,
                 boxes_per_image: int = 8) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """uint8 images [B, 3, H, W] and per image ``boxes_per_image`` random boxes (float [N, 4] XYXY, 16-116 px
    sides) with labels (int64 [N] in [0, NUM_CLASSES))."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=generator)
    boxes, labels = [], []
    for _ in range(batch):
        corner = torch.rand(boxes_per_image, 2, generator=generator) * torch.tensor([width - 120.0, height - 120.0])
        side = 16 + torch.rand(boxes_per_image, 2, generator=generator) * 100
        boxes.append(torch.cat([corner, corner + side], dim=1))
        labels.append(torch.randint(0, NUM_CLASSES, (boxes_per_image,), generator=generator))
    return images, boxes, labels
