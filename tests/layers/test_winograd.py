"""Winograd F(4x4, 3x3) against torch's direct convolution, when it must not be used, and the conversion of a built
model (convert_to_winograd) that keeps its state_dict."""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import od2.layers.winograd as winograd_module
from od2.layers.winograd import (
    WinogradConv2d,
    convert_to_winograd,
    transform_filter,
    winograd_applies,
    winograd_conv3x3,
    winograd_eligible,
)
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


def close(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 5e-5) -> bool:
    """Within fp32 rounding of the Winograd transforms, relative to the largest value."""
    return got.shape == expected.shape and bool((got - expected).abs().max() <= tolerance * expected.abs().max())


def direct(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The independent reference: torch's direct convolution with the conv's parameters."""
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class Toy(nn.Module):
    """Eligible and ineligible convs side by side, one of them called twice (shared weights, as the head's towers)."""

    def __init__(self):
        super().__init__()
        self.wide = nn.Conv2d(128, 128, 3, padding=1)  # eligible
        self.strided = nn.Conv2d(128, 128, 3, stride=2, padding=1)
        self.depthwise = nn.Conv2d(128, 128, 3, padding=1, groups=128)
        self.pointwise = nn.Conv2d(128, 128, 1)
        self.narrow = nn.Conv2d(128, 64, 3, padding=1, bias=False)  # eligible (input channels count)
        self.few_inputs = nn.Conv2d(64, 8, 3, padding=1)
        self.norm = nn.GroupNorm(8, 128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.norm(self.wide(self.wide(x)).relu())
        y = y + self.depthwise(y) + self.pointwise(y)
        return self.few_inputs(self.narrow(y)), self.strided(y)


def test_winograd_eligible_and_applies_only_where_it_pays():
    conv = nn.Conv2d(128, 64, 3, padding=1).requires_grad_(False)  # as at inference
    x = torch.randn(1, 128, 32, 32)
    assert winograd_eligible(conv) and winograd_applies(conv, x)
    assert not winograd_applies(conv, torch.randn(1, 128, 8, 8))  # small map: direct is faster
    assert not winograd_applies(conv, x.double())
    assert not winograd_eligible(nn.Conv2d(64, 64, 3, padding=1))  # few channels
    assert not winograd_eligible(nn.Conv2d(128, 64, 3, stride=2, padding=1))
    assert not winograd_eligible(nn.Conv2d(128, 64, 3, padding=2, dilation=2))
    assert not winograd_eligible(nn.Conv2d(128, 128, 3, padding=1, groups=128))
    assert not winograd_eligible(nn.Conv2d(128, 64, 1))
    assert not winograd_eligible(nn.Conv2d(128, 64, 3, padding=1, padding_mode="reflect"))
    assert not winograd_eligible(nn.Linear(128, 64))


def test_conversion_keeps_the_state_dict_and_converts_only_eligible_convs():
    torch.manual_seed(4)
    model = Toy()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    parameters = list(model.parameters())
    assert convert_to_winograd(model) is model
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert [p1 is p2 for p1, p2 in zip(model.parameters(), parameters)] == [True] * len(parameters)
    converted = {name for name, module in model.named_modules() if isinstance(module, WinogradConv2d)}
    assert converted == {"wide", "narrow"}
    assert all(type(module) is nn.Conv2d for name, module in model.named_children()
               if isinstance(module, nn.Conv2d) and name not in converted)
    # a plain model loads the converted one's state_dict and vice versa (strict: same keys)
    Toy().load_state_dict(model.state_dict())
    model.load_state_dict(Toy().state_dict())


def test_converting_twice_is_a_no_op_and_subclasses_are_left_alone():
    class OwnForward(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), OwnForward(128, 128, 3, padding=1))
    convert_to_winograd(convert_to_winograd(model))
    assert [type(m) for m in model] == [WinogradConv2d, OwnForward]
    single = convert_to_winograd(nn.Conv2d(128, 16, 3, padding=1))  # the model may be the conv itself
    assert type(single) is WinogradConv2d


def test_converted_inference_matches_the_direct_convolution(monkeypatch):
    torch.manual_seed(5)
    model = Toy().eval()
    x = torch.randn(2, 128, 20, 28)
    with torch.no_grad():
        expected = model(x)
        expected_wide = direct(model.wide, x)
        convert_to_winograd(model)
        calls = []
        original = winograd_module.winograd_conv3x3
        monkeypatch.setattr(winograd_module, "winograd_conv3x3", lambda *args: calls.append(1) or original(*args))
        got = model(x)
        got_wide = model.wide(x)
    assert len(calls) == 4  # wide twice, narrow, wide again: Winograd ran
    assert close(got_wide, expected_wide)
    assert all(close(g, e, 1e-4) for g, e in zip(got, expected))


def test_under_autograd_the_converted_conv_is_exactly_the_direct_convolution():
    torch.manual_seed(6)
    conv = convert_to_winograd(nn.Conv2d(128, 32, 3, padding=1))
    x = torch.randn(1, 128, 20, 20, requires_grad=True)
    assert not winograd_applies(conv, x)  # autograd on and a trainable weight
    out = conv(x)
    assert "Convolution" in type(out.grad_fn).__name__
    reference_x = x.detach().clone().requires_grad_()
    reference = direct(conv, reference_x)
    assert torch.equal(out, reference)
    out.square().sum().backward()
    grad_weight = conv.weight.grad.clone()
    conv.weight.grad = None
    reference.square().sum().backward()
    assert torch.equal(x.grad, reference_x.grad) and torch.equal(grad_weight, conv.weight.grad)
    # a frozen conv on an input that needs its gradient is also direct
    assert not winograd_applies(conv.requires_grad_(False), x)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_under_tracing_the_converted_conv_is_exactly_the_direct_convolution():
    torch.manual_seed(7)
    model = convert_to_winograd(nn.Sequential(nn.Conv2d(128, 64, 3, padding=1), nn.ReLU())).eval()
    x = torch.randn(1, 128, 32, 32)
    with torch.no_grad():
        assert winograd_applies(model[0], x)  # eager inference would use Winograd
        # export and tracing see the direct convolution (the trace check would rerun the module untraced, by
        # Winograd, and warn about the 1e-5 difference)
        traced = torch.jit.trace(model, x, check_trace=False)
        graph = str(traced.inlined_graph)
        assert "aten::_convolution" in graph and "aten::bmm" not in graph
        assert torch.equal(traced(x), direct(model[0], x).relu())


def test_cached_filter_follows_weight_updates():
    torch.manual_seed(2)
    conv = convert_to_winograd(nn.Conv2d(128, 32, 3, padding=1))
    x = torch.randn(1, 128, 20, 20)

    with torch.no_grad():
        assert close(conv(x), direct(conv, x))
        conv.weight.mul_(-2.0)  # an in-place update, as an optimizer step or load_state_dict makes
        assert close(conv(x), direct(conv, x))
        conv.weight = nn.Parameter(torch.randn_like(conv.weight))  # a new tensor
        assert close(conv(x), direct(conv, x))
        conv.weight.data = torch.randn_like(conv.weight)  # new data under the same parameter
        assert close(conv(x), direct(conv, x))


def test_weights_made_under_inference_mode_have_no_version_counter_and_still_work():
    torch.manual_seed(9)
    x = torch.randn(1, 128, 20, 20)
    with torch.inference_mode():  # e.g. a model copied or loaded inside inference_mode: its weights are inference
        conv = convert_to_winograd(copy.deepcopy(nn.Conv2d(128, 32, 3, padding=1)))  # tensors
        assert conv.weight.is_inference()
        assert close(conv(x), direct(conv, x))
        conv.weight.mul_(-2.0)  # not tracked by a version counter: must not be served from a stale cache
        assert close(conv(x), direct(conv, x))

def test_copies_and_pickles_of_a_converted_model_leave_the_cached_filter_behind():
    torch.manual_seed(8)
    conv = convert_to_winograd(nn.Conv2d(128, 32, 3, padding=1))
    x = torch.randn(1, 128, 20, 20)
    with torch.no_grad():
        expected = conv(x)
        assert conv._winograd_cache is not None
        for copied in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
            assert type(copied) is WinogradConv2d and copied._winograd_cache is None
            assert torch.equal(copied(x), expected)


def test_the_head_has_no_winograd_switch_and_converts_as_any_model(monkeypatch):
    assert "winograd" not in inspect.signature(RetinaNetHead).parameters
    torch.manual_seed(3)
    head = RetinaNetHead(128, 9, 20, 3, num_convs=2, norm="GN").eval()
    for module in head.modules():  # make the outputs depend on the input (init is N(0, 0.01), bias 0)
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.05)
    features = [torch.randn(2, 128, s, s) for s in (32, 16, 8)]
    transforms = []
    original = winograd_module.transform_filter
    monkeypatch.setattr(winograd_module, "transform_filter", lambda w: transforms.append(w) or original(w))
    with torch.no_grad():
        direct_logits, direct_deltas = head(features)
        assert transforms == []
        convert_to_winograd(head)
        logits, deltas = head(features)
        head(features)
    assert len(transforms) == 6  # 6 convs (2 per tower, 2 predictors), each transformed once for both passes
    for got, expected in zip(logits + deltas, direct_logits + direct_deltas):
        assert close(got, expected, 1e-4)
