"""od2.layers.cpu_conv: the same values and gradients as F.conv2d whichever layout the weight gradient takes, the
per-shape choice made once, and every case it does not apply to left to F.conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from od2.layers import cpu_conv
from od2.layers.conv_norm import make_conv
from od2.layers.cpu_conv import Conv2d, conv2d


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    """Each test starts with no layout chosen and tuning on, and leaves it so; its small convs are tuned too."""
    monkeypatch.setattr(cpu_conv, "MIN_TUNED_MACS", 0)
    cpu_conv.clear_tuned_layouts()
    previous = cpu_conv.set_weight_grad_tuning(True)
    yield
    cpu_conv.set_weight_grad_tuning(previous)
    cpu_conv.clear_tuned_layouts()


def force_layout(monkeypatch, layout: torch.memory_format) -> None:
    """Make ``layout`` the only candidate, chosen at a shape's first backward pass."""
    monkeypatch.setattr(cpu_conv, "LAYOUTS", (layout,))
    monkeypatch.setattr(cpu_conv, "TRIALS_PER_LAYOUT", 1)


def random_conv_inputs(cin=5, cout=7, kernel=3, height=11, width=9, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, height, width, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, kernel, kernel, generator=g).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(cout, generator=g)
    return x, weight, bias


def gradients(fn, x, weight, bias, seed):
    """(output, grad x, grad weight, grad bias) of ``(fn(x, weight, bias) * r).sum()`` for a fixed random r."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias)]
    out = fn(*leaves)
    r = torch.randn(out.shape, generator=seed)
    (out * r).sum().backward()
    return (out.detach(),) + tuple(t.grad for t in leaves)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("stride,padding,dilation,kernel", [(1, 1, 1, 3), (2, 1, 1, 3), (2, 3, 1, 7), (1, 2, 2, 3),
                                                             ((2, 1), (1, 0), 1, 3)])
def test_values_and_gradients_match_f_conv2d_in_either_layout(monkeypatch, layout, stride, padding, dilation,
                                                                kernel):
    force_layout(monkeypatch, layout)
    x, weight, bias = random_conv_inputs(kernel=kernel)

    def ours(x, w, b):
        return conv2d(x, w, b, stride, padding, dilation)

    def reference(x, w, b):
        return F.conv2d(x, w, b, stride, padding, dilation)

    got = gradients(ours, x, weight, bias, torch.Generator().manual_seed(1))
    expected = gradients(reference, x, weight, bias, torch.Generator().manual_seed(1))
    assert list(cpu_conv.tuned_layouts().values()) == [layout]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert got[2].is_contiguous(memory_format=torch.channels_last)  # the weight gradient keeps the weight's layout


def test_the_autograd_function_gives_the_weight_gradient_alone_for_an_input_without_grad(monkeypatch):
    force_layout(monkeypatch, torch.contiguous_format)
    x, weight, _ = random_conv_inputs()
    weight.requires_grad_(True)
    out = conv2d(x, weight, None, 1, 1)
    assert type(out.grad_fn).__name__ == "_TunedWeightGradConv2dBackward"
    out.sum().backward()
    reference = weight.detach().clone().requires_grad_(True)
    F.conv2d(x, reference, None, 1, 1).sum().backward()
    torch.testing.assert_close(weight.grad, reference.grad, rtol=1e-5, atol=1e-5)


def test_layouts_take_turns_until_the_faster_is_kept_per_shape(monkeypatch):
    """With a clock on which an NCHW weight gradient takes 1 s and an NHWC one 3 s, each shape alternates between
    them for its first 2 x TRIALS_PER_LAYOUT backward passes, then keeps NCHW."""
    calls = []
    seconds = {torch.channels_last: 3.0, torch.contiguous_format: 1.0}
    now = [0.0]
    tuned_pass = cpu_conv._weight_grad_in_tuned_layout

    def spy(key, run):
        def timed_run(layout):
            calls.append((key[0][2], layout))
            now[0] += seconds[layout]
            return run(layout)
        return tuned_pass(key, timed_run)

    monkeypatch.setattr(cpu_conv, "_weight_grad_in_tuned_layout", spy)
    monkeypatch.setattr(cpu_conv, "_clock", lambda: now[0])
    conv = Conv2d(5, 7, 3, padding=1).to(memory_format=torch.channels_last)
    trials = 2 * cpu_conv.TRIALS_PER_LAYOUT
    for height in [11] * (trials + 2) + [13]:
        x = torch.randn(2, 5, height, 9).contiguous(memory_format=torch.channels_last)
        conv(x).sum().backward()
    cl, nchw = torch.channels_last, torch.contiguous_format
    assert [layout for height, layout in calls if height == 11] == [cl, nchw] * (trials // 2) + [nchw, nchw]
    assert [layout for height, layout in calls if height == 13] == [cl]  # another shape starts its own trials
    chosen = cpu_conv.tuned_layouts()
    assert len(chosen) == 1 and list(chosen.values()) == [nchw]
    cpu_conv.clear_tuned_layouts()
    assert cpu_conv.tuned_layouts() == {} and cpu_conv._trials == {}


def not_tuned_cases():
    x, weight, bias = random_conv_inputs()
    w1 = torch.randn(7, 5, 1, 1).contiguous(memory_format=torch.channels_last)
    return {
        "NCHW input": lambda: conv2d(x.contiguous(), weight.requires_grad_(True), bias, 1, 1),
        "1x1 kernel": lambda: conv2d(x, w1.requires_grad_(True), bias),
        "grouped": lambda: conv2d(torch.randn(2, 6, 5, 5).contiguous(memory_format=torch.channels_last),
                                  torch.randn(6, 3, 3, 3, requires_grad=True), None, 1, 1, 1, 2),
        "float64": lambda: conv2d(x.double(), weight.double().requires_grad_(True), None, 1, 1),
        "weight without grad": lambda: conv2d(x.requires_grad_(True), weight.detach(), bias, 1, 1),
        "no_grad": lambda: torch.no_grad()(conv2d)(x, weight.requires_grad_(True), bias, 1, 1),
        "autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)(conv2d)(x, weight.requires_grad_(True),
                                                                                bias, 1, 1),
        "string padding": lambda: conv2d(x, weight.requires_grad_(True), bias, 1, "same"),
        "too small to pay": lambda: conv2d(x, weight.requires_grad_(True), bias, 1, 1),
    }


@pytest.mark.parametrize("case", list(not_tuned_cases()))
def test_cases_it_does_not_apply_to_run_f_conv2d(monkeypatch, case):
    if case == "too small to pay":
        x, weight, _ = random_conv_inputs()
        monkeypatch.setattr(cpu_conv, "MIN_TUNED_MACS", cpu_conv._multiply_adds(x, weight, (1, 1)) + 1)
    out = not_tuned_cases()[case]()
    assert out.grad_fn is None or "Tuned" not in type(out.grad_fn).__name__


def test_switched_off_or_deterministic_it_runs_f_conv2d():
    x, weight, bias = random_conv_inputs()
    weight.requires_grad_(True)
    cpu_conv.set_weight_grad_tuning(False)
    assert "Tuned" not in type(conv2d(x, weight, bias, 1, 1).grad_fn).__name__
    cpu_conv.set_weight_grad_tuning(True)
    torch.use_deterministic_algorithms(True)
    try:
        assert "Tuned" not in type(conv2d(x, weight, bias, 1, 1).grad_fn).__name__
    finally:
        torch.use_deterministic_algorithms(False)
    assert "Tuned" in type(conv2d(x, weight, bias, 1, 1).grad_fn).__name__


def test_conv2d_module_is_an_nn_conv2d_with_the_same_state_and_output(monkeypatch):
    force_layout(monkeypatch, torch.contiguous_format)
    torch.manual_seed(0)
    ours = make_conv(5, 7, 3, stride=2)
    assert isinstance(ours, Conv2d) and isinstance(ours, nn.Conv2d)
    plain = nn.Conv2d(5, 7, 3, 2, padding=1)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 12, 10).contiguous(memory_format=torch.channels_last)
    for module in (ours, plain):
        module.to(memory_format=torch.channels_last)
        (module(x) * torch.linspace(-1, 1, 7 * 6 * 5 * 2).view(2, 7, 6, 5)).sum().backward()
    torch.testing.assert_close(ours.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-5)


def test_conv2d_module_with_another_padding_mode_keeps_nn_conv2d_behaviour():
    torch.manual_seed(0)
    ours = Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    plain = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours(x), plain(x))


def test_a_retinanet_training_step_has_the_same_gradients_with_the_tuned_layout(monkeypatch):
    from od2.benchmark.retinanet_pair import CONFIG, random_batch
    from od2.config import load_config
    from od2.modeling.build import build_model

    cfg = load_config(CONFIG, ["MODEL.RESNETS.DEPTH=18", "MODEL.BACKBONE.NORM=BN", "MODEL.BACKBONE.FREEZE_AT=0"])
    torch.manual_seed(0)
    model = build_model(cfg, 3).train()
    images, boxes, labels = random_batch(2, height=128, width=160, boxes_per_image=3)
    labels = [label % 3 for label in labels]
    sizes = torch.tensor([[128, 160]] * 2)
    force_layout(monkeypatch, torch.contiguous_format)
    grads = []
    for enabled in (False, True):
        cpu_conv.set_weight_grad_tuning(enabled)
        model.zero_grad()
        sum(model(images, sizes, {"boxes": boxes, "labels": labels}).values()).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert len(cpu_conv.tuned_layouts()) > 10  # backbone, FPN and head convs went through the tuned path
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
