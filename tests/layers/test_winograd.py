"""Winograd F(4x4, 3x3) against torch's direct convolution, and when it must not be used."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from od2.layers.winograd import conv3x3, transform_filter, winograd_applies, winograd_conv3x3
from od2.modeling.retinanet_head import RetinaNetHead


@pytest.mark.parametrize("batch,cin,cout,height,width", [
    (1, 256, 256, 72, 96),   # P3 of a 576x768 image: tiles fill it exactly
    (2, 64, 36, 17, 23),     # sizes that leave partial tiles, two images
    (1, 96, 720, 16, 16),    # the class predictor's width
    (3, 8, 5, 1, 2),         # tiny maps and channel counts (the function itself has no limits)
])
@pytest.mark.parametrize("bias", [True, False])
def test_winograd_matches_direct_convolution(batch, cin, cout, height, width, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    x = torch.randn(batch, cin, height, width)
    with torch.no_grad():
        expected = conv(x)
        got = winograd_conv3x3(x, transform_filter(conv.weight), conv.bias)
    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert (got - expected).abs().max() <= 5e-5 * expected.abs().max()


def test_winograd_is_not_the_identity_of_a_wrong_kernel():
    """A flipped kernel must not pass: the test above would be blind to a transposed transform otherwise."""
    torch.manual_seed(1)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        flipped = winograd_conv3x3(x, transform_filter(conv.weight.flip(-1)), conv.bias)
        assert (flipped - conv(x)).abs().max() > 1e-2


def test_conv3x3_falls_back_where_winograd_must_not_run():
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(1, 64, 32, 32)
    with torch.no_grad():
        assert winograd_applies(conv, x)
        assert not winograd_applies(conv, torch.randn(1, 64, 8, 8))  # small map: direct is faster
        assert not winograd_applies(nn.Conv2d(32, 64, 3, padding=1), torch.randn(1, 32, 32, 32))
        assert not winograd_applies(nn.Conv2d(64, 64, 3, stride=2, padding=1), x)
        assert not winograd_applies(nn.Conv2d(64, 64, 3, padding=1, groups=64), x)
        assert not winograd_applies(nn.Conv2d(64, 64, 1), x)
        assert not winograd_applies(conv, x.double())
    assert not winograd_applies(conv, x)  # autograd on: training keeps the direct convolution
    out = conv3x3(conv, x.requires_grad_())
    assert out.grad_fn is not None


def test_cached_filter_follows_weight_updates():
    torch.manual_seed(2)
    conv = nn.Conv2d(64, 32, 3, padding=1)
    x = torch.randn(1, 64, 20, 20)

    def close(got, expected):
        return (got - expected).abs().max() <= 5e-5 * expected.abs().max()

    with torch.no_grad():
        assert close(conv3x3(conv, x), conv(x))
        conv.weight.mul_(-2.0)  # an in-place update, as an optimizer step or load_state_dict makes
        assert close(conv3x3(conv, x), conv(x))
        conv.weight = nn.Parameter(torch.randn_like(conv.weight))  # a new tensor
        assert close(conv3x3(conv, x), conv(x))
        conv.weight.data = torch.randn_like(conv.weight)  # new data under the same parameter
        assert close(conv3x3(conv, x), conv(x))


def test_head_outputs_with_and_without_winograd_agree():
    torch.manual_seed(3)
    head = RetinaNetHead(64, 9, 20, 3, num_convs=2, norm="GN", winograd=True).eval()
    for module in head.modules():  # make the outputs depend on the input (init is N(0, 0.01), bias 0)
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.05)
    features = [torch.randn(2, 64, s, s) for s in (32, 16, 8)]
    with torch.no_grad():
        logits, deltas = head(features)
        head.winograd = False
        direct_logits, direct_deltas = head(features)
    for got, expected in zip(logits + deltas, direct_logits + direct_deltas):
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_models_with_a_cached_filter_still_copy_and_the_config_switch_reaches_the_head():
    import copy

    from od2.config import load_config
    from od2.modeling.build import build_model

    cfg = load_config("configs/digits/retinanet_lite0.yaml", ["MODEL.BACKBONE.PRETRAINED=false"])
    model = build_model(cfg, 10).eval()
    assert model.head.winograd
    with torch.no_grad():
        model(torch.zeros(1, 3, 192, 256, dtype=torch.uint8), torch.tensor([[192, 256]]))
    copy.deepcopy(model)
    off = load_config("configs/digits/retinanet_lite0.yaml", ["MODEL.BACKBONE.PRETRAINED=false", "TEST.WINOGRAD=false"])
    assert not build_model(off, 10).head.winograd
