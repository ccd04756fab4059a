"""Winograd F(4x4, 3x3) against torch's direct convolution, and when it must not be used."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import od2.layers.winograd as winograd_module
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


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_winograd_is_used_only_where_it_pays():
    conv = nn.Conv2d(128, 64, 3, padding=1).requires_grad_(False)  # as at inference
    x = torch.randn(1, 128, 32, 32)
    assert winograd_applies(conv, x)
    assert not winograd_applies(conv, torch.randn(1, 128, 8, 8))  # small map: direct is faster
    with torch.no_grad():
        assert not winograd_applies(nn.Conv2d(64, 64, 3, padding=1), torch.randn(1, 64, 32, 32))  # few channels
        assert not winograd_applies(nn.Conv2d(128, 64, 3, stride=2, padding=1), x)
        assert not winograd_applies(nn.Conv2d(128, 128, 3, padding=1, groups=128), x)
        assert not winograd_applies(nn.Conv2d(128, 64, 1), x)
    assert not winograd_applies(conv, x.double())

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, t):
            return conv3x3(self.conv, t)

    with torch.no_grad():
        # export and tracing see the direct convolution (the trace check would rerun the module untraced, by
        # Winograd, and warn about the 1e-5 difference)
        graph = str(torch.jit.trace(Wrapper(), x, check_trace=False).inlined_graph)
    assert "aten::_convolution" in graph and "aten::bmm" not in graph


def test_training_keeps_the_direct_convolution():
    conv = nn.Conv2d(128, 32, 3, padding=1)
    x = torch.randn(1, 128, 20, 20)
    assert not winograd_applies(conv, x)  # autograd on and a trainable weight
    assert "Convolution" in type(conv3x3(conv, x).grad_fn).__name__
    assert not winograd_applies(nn.Conv2d(128, 32, 3, padding=1).requires_grad_(False), x.requires_grad_())


def test_cached_filter_follows_weight_updates():
    torch.manual_seed(2)
    conv = nn.Conv2d(128, 32, 3, padding=1)
    x = torch.randn(1, 128, 20, 20)

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


def test_head_outputs_with_and_without_winograd_agree(monkeypatch):
    torch.manual_seed(3)
    head = RetinaNetHead(128, 9, 20, 3, num_convs=2, norm="GN", winograd=True).eval()
    for module in head.modules():  # make the outputs depend on the input (init is N(0, 0.01), bias 0)
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.05)
    features = [torch.randn(2, 128, s, s) for s in (32, 16, 8)]
    transforms = []
    original = winograd_module.transform_filter
    monkeypatch.setattr(winograd_module, "transform_filter", lambda w: transforms.append(w) or original(w))
    with torch.no_grad():
        logits, deltas = head(features)
        head(features)
        head.winograd = False
        direct_logits, direct_deltas = head(features)
    assert len(transforms) == 6  # 6 convs (2 per tower, 2 predictors), each transformed once for both passes
    for got, expected in zip(logits + deltas, direct_logits + direct_deltas):
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_models_with_a_cached_filter_still_copy_and_the_config_switch_reaches_the_head():
    import copy

    from od2.config import load_config
    from od2.modeling.build import build_model

    overrides = ["MODEL.BACKBONE.PRETRAINED=false", "MODEL.FPN.OUT_CHANNELS=128"]
    model = build_model(load_config("configs/digits/retinanet_lite0.yaml", overrides), 10).eval()
    assert model.head.winograd
    with torch.no_grad():
        model(torch.zeros(1, 3, 192, 256, dtype=torch.uint8), torch.tensor([[192, 256]]))
    copy.deepcopy(model)
    off = load_config("configs/digits/retinanet_lite0.yaml", [*overrides, "MODEL.RETINANET.WINOGRAD=false"])
    assert not build_model(off, 10).head.winograd
