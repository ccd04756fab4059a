"""SeparableConv2d / ConvNormAct(separable=True) and the separable RetinaNet head option (official EfficientDet)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from od2.layers import ConvNormAct, SeparableConv2d, make_conv
from od2.layers.spectral_norm import SpectralNorm2d
from od2.modeling.retinanet_head import RetinaNetHead


def test_separable_conv_is_depthwise_then_pointwise():
    torch.manual_seed(0)
    conv = SeparableConv2d(6, 10, 3, stride=2).double()
    x = torch.randn(2, 6, 9, 12, dtype=torch.float64)
    by_hand = F.conv2d(F.conv2d(x, conv.depthwise.weight, stride=2, padding=1, groups=6),
                       conv.pointwise.weight, conv.pointwise.bias)
    torch.testing.assert_close(conv(x), by_hand)
    assert conv(x).shape == (2, 10, math.ceil(9 / 2), math.ceil(12 / 2))
    assert conv.depthwise.weight.shape == (6, 1, 3, 3) and conv.depthwise.bias is None
    assert conv.weight is conv.pointwise.weight and conv.bias is conv.pointwise.bias


def test_conv_norm_act_separable_parameter_count_and_norm_weight():
    block = ConvNormAct(8, 16, 3, norm="BN", separable=True)
    # depthwise 8*9, pointwise 8*16 without bias (a norm follows), BN 2*16
    assert sum(p.numel() for p in block.parameters()) == 8 * 9 + 8 * 16 + 2 * 16
    sn_block = ConvNormAct(8, 16, 3, norm="SN", separable=True)
    assert isinstance(sn_block.norm_act.norm, SpectralNorm2d)
    y = sn_block(torch.randn(1, 8, 5, 5))  # SN reads the pointwise kernel [16, 8, 1, 1]
    assert y.shape == (1, 16, 5, 5)
    with pytest.raises(ValueError, match="groups must be 1"):
        make_conv(8, 8, 3, groups=8, separable=True)


def test_separable_head_keeps_the_prior_and_layout():
    head = RetinaNetHead(16, 9, 4, 3, num_convs=2, norm="BN", activation="swish", separable=True)
    assert isinstance(head.cls_score, SeparableConv2d) and isinstance(head.bbox_pred, SeparableConv2d)
    torch.testing.assert_close(head.cls_score.bias, torch.full((36,), -math.log(99.0)))
    assert all(isinstance(c, SeparableConv2d) for c in head.cls_tower.convs)
    features = [torch.randn(2, 16, s, s) for s in (8, 4, 2)]
    logits, deltas = head(features)
    assert [tuple(t.shape) for t in logits] == [(2, s * s * 9, 4) for s in (8, 4, 2)]
    assert [tuple(t.shape) for t in deltas] == [(2, s * s * 9, 4) for s in (8, 4, 2)]
    # at init every anchor's class probability is the prior
    torch.testing.assert_close(torch.sigmoid(logits[0]).mean(), torch.tensor(0.01), atol=2e-3, rtol=0)


def test_separable_head_init_keeps_the_depthwise_scale():
    torch.manual_seed(0)
    head = RetinaNetHead(64, 9, 4, 1, num_convs=1, separable=True)
    x = torch.randn(1, 64, 32, 32)
    conv = head.cls_tower.convs[0]
    ratio = conv.depthwise(x).std() / x.std()
    assert 0.8 < ratio < 1.25  # not the 0.01 x 0.01 product of two detectron2-style inits
    assert conv.pointwise.weight.std().item() == pytest.approx(0.01, rel=0.1)
