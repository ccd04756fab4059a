"""Parameter counts against independent references: torchvision's RetinaNet R50-FPN (built here) and the
published EfficientDet-D0 (paper: 3.9M; effdet 0.4.1 ``tf_efficientdet_d0`` with 90 classes: 3,880,067, its
EfficientNet-B0 backbone 3,595,388, head 88,398 - counted with effdet installed, see docs/benchmarks.md).

Each difference is explained by a formula of the one structural choice that differs, so the tolerance is zero."""

from __future__ import annotations

from pathlib import Path

import torchvision

from od2.config import load_config
from od2.modeling.build import build_model

REPO = Path(__file__).resolve().parents[2]
EFFDET_D0_TOTAL, EFFDET_D0_BACKBONE, EFFDET_D0_HEAD = 3_880_067, 3_595_388, 88_398


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_retinanet_r50_fpn_matches_torchvision_part_for_part():
    # Trainable BN in the backbone so that torchvision (weights_backbone=None: plain BatchNorm) counts the same.
    ours = build_model(load_config(None, ["MODEL.BACKBONE.NORM=BN"]), 91)
    tv_v1 = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    tv_v2 = torchvision.models.detection.retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                                                  num_classes=91)
    assert count(ours.backbone) == count(tv_v2.backbone.body)
    # v2's FPN makes P6 from C5 as ours (the original's LastLevelP6P7); v1 makes it from P5: 3x3 2048->256 vs 256->256
    assert count(ours.neck) == count(tv_v2.backbone.fpn)
    assert count(tv_v2.backbone.fpn) - count(tv_v1.backbone.fpn) == (2048 - 256) * 256 * 9
    assert count(ours.head) == count(tv_v1.head)  # no norm: same convs, biases and predictors
    # with GroupNorm, ours has one norm per level (5) where torchvision shares one: 2 towers x 4 convs x 2 x 256
    ours_gn = build_model(load_config(None, ["MODEL.RETINANET.NORM=GN"]), 91)
    assert count(ours_gn.head) - count(tv_v2.head) == 2 * 4 * (5 - 1) * 2 * 256


def test_efficientdet_d0_official_matches_the_published_count():
    cfg = load_config(REPO / "configs/coco/EfficientDet-D0-official.yaml", ["MODEL.BACKBONE.NORM=BN"])
    model = build_model(cfg, 90)
    assert count(model.backbone) == EFFDET_D0_BACKBONE  # torchvision's B0 is the TF B0 layer for layer
    # effdet keeps a bias in the 6 head separable convs although BN follows
    assert count(model.head) + 6 * 64 == EFFDET_D0_HEAD
    # effdet's first cell re-projects C4 and C5 for its bottom-up path (1x1 conv + BN each), and keeps biases
    # before BN in the 24 BiFPN separable convs and the 6 resampling 1x1 convs
    reprojection = (112 + 320) * 64 + 2 * 2 * 64
    biases = (24 + 6 + 6) * 64
    assert count(model) + reprojection + biases == EFFDET_D0_TOTAL
    assert abs(count(model) / 3.9e6 - 1) < 0.015  # the paper's rounded 3.9M


def test_log_efficientdet_d0_breakdown():
    """The log's D0 (original-spec §14): same B0, plus 3x3/2 C6/C7 convs with EvoNorm, regular-conv GN BiFPN, an
    EvoNorm head with regular 3x3 convs: 6.59M parameters, all accounted for here."""
    model = build_model(load_config(REPO / "configs/coco/EfficientDet-D0.yaml", ["MODEL.BACKBONE.NORM=BN"]), 90)
    evo = 3  # EvoNorm-S0 parameters per channel (gamma, beta, v)
    c6c7 = 320 * 256 * 9 + evo * 256 + 256 * 256 * 9 + evo * 256
    assert count(model.backbone) == EFFDET_D0_BACKBONE + c6c7
    projections = (40 + 112 + 320 + 256 + 256) * 64 + 5 * 2 * 64  # 1x1 conv + GN, no bias
    cells = 3 * (8 * (64 * 64 * 9 + 2 * 64) + 4 * 2 + 3 * 3 + 2)  # 8 conv+GN, fusion weights 2/3 per node
    assert count(model.neck) == projections + cells
    towers = 2 * 3 * (64 * 64 * 9 + 5 * evo * 64)  # shared convs, per-level EvoNorm
    predictors = 64 * 9 * 9 * 90 + 9 * 90 + 64 * 9 * 9 * 4 + 9 * 4
    assert count(model.head) == towers + predictors
    assert count(model) == 6_590_595  # 6,551,139 with the config's FrozenBN, whose affine values are buffers
