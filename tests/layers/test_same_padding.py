"""TensorFlow 'SAME' padding: the pad amounts, checked against timm's TF-port padding and worked examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from od2.layers import ConvNormAct
from od2.layers.same_padding import Conv2dSame, tf_same_padding

timm_padding = pytest.importorskip("timm.layers.padding")


@pytest.mark.parametrize("kernel, stride", [(1, 1), (2, 2), (3, 1), (3, 2), (5, 2), (3, 3)])
def test_padding_matches_timm_pad_same(kernel, stride):
    for height in range(1, 12):
        for width in (1, 2, 7, 10):
            x = torch.randn(1, 1, height, width)
            ours = F.pad(x, tf_same_padding(height, width, kernel, stride))
            torch.testing.assert_close(ours, timm_padding.pad_same(x, [kernel, kernel], [stride, stride]))
            assert F.max_pool2d(ours, kernel, stride).shape[-2:] == (math.ceil(height / stride),
                                                                     math.ceil(width / stride))


@pytest.mark.parametrize("height, kernel, stride, expected", [
    (8, 3, 2, (0, 1)),  # out 4: total (4-1)*2 + 3 - 8 = 1, the odd pixel after
    (7, 5, 2, (2, 2)),  # out 4: total 6 + 5 - 7 = 4
    (1, 3, 2, (1, 1)),  # out 1: total 0 + 3 - 1 = 2
    (9, 3, 1, (1, 1)),  # stride 1, odd kernel: the symmetric k // 2
    (6, 2, 2, (0, 0)),  # 2x2/2 on an even size needs none
])
def test_worked_examples(height, kernel, stride, expected):
    left, right, top, bottom = tf_same_padding(height, 10, kernel, stride)
    assert (top, bottom) == expected


def test_rejects_a_size_or_kernel_below_one():
    with pytest.raises(ValueError, match="kernel"):
        tf_same_padding(8, 8, 0, 2)
    with pytest.raises(ValueError, match="size"):
        tf_same_padding(0, 8, 3, 2)


def test_conv_norm_act_pads_strided_convs_as_tf_when_asked():
    torch.manual_seed(0)
    block = ConvNormAct(3, 4, 3, stride=2, norm="BN", activation="relu6", tf_same=True).eval()
    assert isinstance(block.conv, Conv2dSame)
    x = torch.randn(1, 3, 8, 7)
    # TF 'SAME' for 3x3/2: 8 rows pad (0, 1), 7 columns pad (1, 1); then eval BN and ReLU6 by hand.
    y = F.conv2d(F.pad(x, (1, 1, 0, 1)), block.conv.weight, stride=2)
    bn = block.norm_act.norm
    y = (y - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
    torch.testing.assert_close(block(x), y.clamp(0, 6))
    # Stride 1 needs no TF padding: the usual symmetric k // 2.
    assert not isinstance(ConvNormAct(3, 4, 3, stride=1, tf_same=True).conv, Conv2dSame)
