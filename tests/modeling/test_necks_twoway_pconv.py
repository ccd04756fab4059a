"""TwoWayFPN (original-spec §12) and PConv (original-spec §13) necks.

The value checks recompute each neck from its parameters with independent arithmetic: 1x1 convs as einsums, the
depthwise 3x3 as a sum of nine shifted maps, TF 'SAME' 2x2/2 average pooling as zero-padding to even size plus
block sums divided by the valid counts, and nearest upsampling of a ceil-halved map as "repeat each row/column
twice, crop".
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from od2.layers import Fusion
from od2.layers.evonorm import EvoNormS0
from od2.modeling.necks.common import downsample_same
from od2.modeling.necks.pconv import PConv, PConvLayer
from od2.modeling.necks.twoway_fpn import TwoWayFPN

C = 16  # neck channels: tiny, and GN / EvoNorm group counts divide it
IN_CHANNELS_5 = {"C3": 8, "C4": 12, "C5": 20, "C6": 16, "C7": 16}
IN_CHANNELS_3 = {"C3": 8, "C4": 12, "C5": 20}
IMAGE_HW = (97, 130)  # odd image: C3 = ceil(97/8) x ceil(130/8) = 13 x 17, then ceil-halving
NECKS = [TwoWayFPN, PConv]
NORMS = ["", "GN", "EvoNormS0", "BN", "SN", "FrozenBN"]


def expected_sizes(levels: list[int], image_hw=IMAGE_HW) -> dict[int, tuple[int, int]]:
    h, w = math.ceil(image_hw[0] / 2 ** levels[0]), math.ceil(image_hw[1] / 2 ** levels[0])
    sizes = {}
    for k in levels:
        sizes[k] = (h, w)
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def make_features(in_channels: dict[str, int], batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sizes = expected_sizes([int(name[1:]) for name in in_channels])
    return {name: torch.randn(batch, c, *sizes[int(name[1:])], generator=g) for name, c in in_channels.items()}


def activation_for(norm: str) -> str:
    return "NA" if norm == "EvoNormS0" else "relu"  # EvoNorm-S0 carries its own non-linearity, as in the log


def make_neck(neck_cls, in_channels=IN_CHANNELS_5, norm: str = "", activation: str | None = None, **kwargs):
    return neck_cls(in_channels, out_channels=C, norm=norm,
                    activation=activation_for(norm) if activation is None else activation, **kwargs)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ independent reference arithmetic

def ref_same_pool(x: torch.Tensor) -> torch.Tensor:
    """TF 'SAME' 2x2/2 avg-pool: pad bottom/right to even size, block sum / number of real pixels in the block."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (0, w % 2, 0, h % 2))
    ones = F.pad(torch.ones_like(x[..., :1, :, :]), (0, w % 2, 0, h % 2))

    def block_sum(t: torch.Tensor) -> torch.Tensor:
        return t[..., 0::2, 0::2] + t[..., 1::2, 0::2] + t[..., 0::2, 1::2] + t[..., 1::2, 1::2]

    return block_sum(padded) / block_sum(ones)


def ref_upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling of a map of size ceil(size / 2): fine pixel i reads coarse pixel i // 2."""
    assert x.shape[-2:] == (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., : size[0], : size[1]]


def ref_conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    y = torch.einsum("oi,bihw->bohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


def ref_depthwise3x3(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    y = sum(conv.weight[:, 0, dy, dx].view(1, -1, 1, 1) * padded[..., dy: dy + h, dx: dx + w]
            for dy in range(3) for dx in range(3))
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


def ref_wsum(fusion: Fusion, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    wa, wb = (max(float(v), 0.0) for v in fusion.weight.detach())
    return (wa * a + wb * b) / (wa + wb + 1e-4)


def ref_act(name: str, x: torch.Tensor) -> torch.Tensor:
    return {"NA": x, "relu": torch.clamp(x, min=0)}[name]


# ------------------------------------------------------------------ shared behaviour of both necks

def test_downsample_is_tf_same_avg_pool_on_odd_map():
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    y = downsample_same(x)
    assert y.shape == (1, 1, 3, 3)
    # by hand: full windows average 4 pixels, the last column / row 2, the corner only itself
    expected = torch.tensor([[(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 9) / 2],
                             [(10 + 11 + 15 + 16) / 4, (12 + 13 + 17 + 18) / 4, (14 + 19) / 2],
                             [(20 + 21) / 2, (22 + 23) / 2, 24.0]])
    torch.testing.assert_close(y[0, 0], expected)
    for hw in [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2), (6, 8)]:
        x = torch.randn(2, 3, *hw)
        torch.testing.assert_close(downsample_same(x), ref_same_pool(x))
        assert downsample_same(x).shape[-2:] == (math.ceil(hw[0] / 2), math.ceil(hw[1] / 2))


def test_reference_upsample_is_what_interpolate_does():
    """The test's "repeat and crop" reference agrees with PyTorch nearest for ceil-halved maps (odd and even)."""
    for fine in [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)]:
        coarse = torch.randn(1, 2, math.ceil(fine[0] / 2), math.ceil(fine[1] / 2))
        torch.testing.assert_close(F.interpolate(coarse, size=fine, mode="nearest"), ref_upsample(coarse, fine))


def test_image_pyramid_sizes_by_hand():
    assert expected_sizes([3, 4, 5, 6, 7]) == {3: (13, 17), 4: (7, 9), 5: (4, 5), 6: (2, 3), 7: (1, 2)}


@pytest.mark.parametrize("neck_cls", NECKS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("in_channels", [IN_CHANNELS_5, IN_CHANNELS_3], ids=["5levels", "3levels"])
def test_names_strides_channels_shapes(neck_cls, norm, in_channels):
    neck = make_neck(neck_cls, in_channels, norm)
    feats = make_features(in_channels)
    out = neck(feats)
    levels = [int(name[1:]) for name in in_channels]
    names = [f"P{k}" for k in levels]
    assert neck.in_features == list(in_channels)
    assert list(out) == neck.out_features == names
    assert neck.strides == {f"P{k}": 2 ** k for k in levels}
    assert neck.out_channels == {name: C for name in names}
    for k, hw in expected_sizes(levels).items():
        assert out[f"P{k}"].shape == (2, C, *hw), k
        assert torch.isfinite(out[f"P{k}"]).all()


@pytest.mark.parametrize("neck_cls", NECKS)
def test_levels_not_starting_at_c3_and_two_levels(neck_cls):
    for in_channels in ({"C4": 8, "C5": 12, "C6": 16}, {"C3": 8, "C4": 12}):
        out = make_neck(neck_cls, in_channels, "GN")(make_features(in_channels))
        levels = [int(name[1:]) for name in in_channels]
        assert list(out) == [f"P{k}" for k in levels]
        for k, hw in expected_sizes(levels).items():
            assert out[f"P{k}"].shape == (2, C, *hw)


@pytest.mark.parametrize("neck_cls", NECKS)
def test_bad_inputs_fail_loudly(neck_cls):
    with pytest.raises(ValueError, match="consecutive"):
        make_neck(neck_cls, {"C3": 8, "C5": 8})
    with pytest.raises(ValueError, match="C3"):
        make_neck(neck_cls, {"res3": 8, "res4": 8})
    neck = make_neck(neck_cls, IN_CHANNELS_3)
    feats = make_features(IN_CHANNELS_3)
    feats["C4"] = torch.randn(2, 12, 6, 8)  # floor-halved 13x17: not what the ceil rule gives
    with pytest.raises(ValueError, match="ceil"):
        neck(feats)


@pytest.mark.parametrize("neck_cls", NECKS)
@pytest.mark.parametrize("norm", ["", "GN", "EvoNormS0", "BN", "SN"])
def test_gradients_reach_every_parameter(neck_cls, norm):
    neck = make_neck(neck_cls, IN_CHANNELS_5, norm).train()
    out = neck(make_features(IN_CHANNELS_5))
    # A random projection rather than a plain sum: the sum of a GN/BN output is constant in its input, which
    # would zero the conv gradients legitimately.
    g = torch.Generator().manual_seed(1)
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in out.values())
    loss.backward()
    for name, param in neck.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


# ------------------------------------------------------------------ TwoWayFPN

@pytest.mark.parametrize("in_channels", [IN_CHANNELS_5, IN_CHANNELS_3], ids=["5levels", "3levels"])
def test_twoway_structure(in_channels):
    neck = make_neck(TwoWayFPN, in_channels, "EvoNormS0")
    num_levels = len(in_channels)
    assert len(neck.top_down_lateral) == len(neck.bottom_up_lateral) == len(neck.output) == num_levels
    for td, bu, cin in zip(neck.top_down_lateral, neck.bottom_up_lateral, in_channels.values()):
        for block in (td, bu):
            assert block.conv.weight.shape == (C, cin, 1, 1)
            assert block.conv.bias is None  # normed
            assert isinstance(block.norm_act.norm, EvoNormS0)
        assert td.conv.weight is not bu.conv.weight  # separate branches
    for block in neck.output:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 1  # depthwise only: no pointwise conv
        assert convs[0].groups == C and convs[0].weight.shape == (C, 1, 3, 3)
        assert isinstance(block.norm_act.norm, EvoNormS0)
    fusions = [m for m in neck.modules() if isinstance(m, Fusion)]
    assert len(fusions) == 2 * (num_levels - 1)
    assert len({id(f.weight) for f in fusions}) == len(fusions)  # each node its own weights
    for f in fusions:
        assert f.fuse_type == "wsum" and f.weight.shape == (2,)
        torch.testing.assert_close(f.weight.detach(), torch.ones(2))


@pytest.mark.parametrize("norm,norm_params", [("", 0), ("GN", 2), ("EvoNormS0", 3), ("BN", 2)])
def test_twoway_parameter_count(norm, norm_params):
    in_channels, num_levels = IN_CHANNELS_5, 5
    bias = C if norm == "" else 0  # a conv has a bias only without a norm
    laterals = 2 * sum(cin * C + bias + norm_params * C for cin in in_channels.values())
    outputs = num_levels * (9 * C + bias + norm_params * C)
    fusions = 2 * (num_levels - 1) * 2
    assert num_params(make_neck(TwoWayFPN, in_channels, norm)) == laterals + outputs + fusions
    # a plain sum fusion has no weights
    assert num_params(make_neck(TwoWayFPN, in_channels, norm, fuse_type="sum")) == laterals + outputs


@pytest.mark.parametrize("activation", ["NA", "relu"])
@pytest.mark.parametrize("fuse_type", ["wsum", "sum"])
def test_twoway_forward_matches_hand_computation(activation, fuse_type):
    in_channels = IN_CHANNELS_5
    neck = make_neck(TwoWayFPN, in_channels, "", activation, fuse_type=fuse_type).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-trivial biases and fusion weights, one of them negative (relu clips it to 0)
        for p in neck.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        if fuse_type == "wsum":
            neck.top_down_fuse[1].weight.copy_(torch.tensor([-0.7, 1.3]))
            neck.bottom_up_fuse[2].weight.copy_(torch.tensor([2.0, -0.1]))
    feats = make_features(in_channels, batch=1, seed=4)
    out = neck(feats)

    def fuse(fusion, a, b):
        return ref_wsum(fusion, a, b) if fuse_type == "wsum" else a + b

    xs = list(feats.values())
    t = [ref_act(activation, ref_conv1x1(m.conv, x)) for m, x in zip(neck.top_down_lateral, xs)]
    b = [ref_act(activation, ref_conv1x1(m.conv, x)) for m, x in zip(neck.bottom_up_lateral, xs)]
    td = {4: t[4]}
    for i in (3, 2, 1, 0):
        td[i] = fuse(neck.top_down_fuse[i], ref_upsample(td[i + 1], t[i].shape[-2:]), t[i])
    bu = {0: b[0]}
    for i in (1, 2, 3, 4):
        bu[i] = fuse(neck.bottom_up_fuse[i - 1], ref_same_pool(bu[i - 1]), b[i])
    for i, name in enumerate(neck.out_features):
        expected = ref_act(activation, ref_depthwise3x3(neck.output[i].conv, td[i] + bu[i]))
        torch.testing.assert_close(out[name], expected, rtol=1e-4, atol=1e-5)


def test_twoway_identity_weights_by_hand():
    """Identity 1x1 convs, delta depthwise kernels, zero biases and weights (1, 1): P = wsum(TD) + wsum(BU) of C."""
    in_channels = {"C3": C, "C4": C}
    neck = make_neck(TwoWayFPN, in_channels, "", "NA").eval()
    with torch.no_grad():
        for block in [*neck.top_down_lateral, *neck.bottom_up_lateral]:
            block.conv.weight.copy_(torch.eye(C).view(C, C, 1, 1))
            block.conv.bias.zero_()
        for block in neck.output:
            block.conv.weight.zero_()
            block.conv.weight[:, 0, 1, 1] = 1.0
            block.conv.bias.zero_()
    c3 = torch.zeros(1, C, 3, 3)
    c3[:, :, 2, 2] = 8.0  # bottom-right corner: alone in its 'SAME' pooling window
    c4 = torch.full((1, C, 2, 2), 2.0)
    out = neck({"C3": c3, "C4": c4})
    half = 1 / (2 + 1e-4)  # wsum of two inputs with weights 1
    # P4 = TD4 + BU4 = c4 + half * (pool(c3) + c4); pool(c3) is 8 at (1, 1) only (a 1-pixel window)
    p4 = torch.full((2, 2), 2.0 + half * 2.0)
    p4[1, 1] += half * 8.0
    torch.testing.assert_close(out["P4"][0, 0], p4)
    # P3 = TD3 + BU3 = half * (up(c4) + c3) + c3
    p3 = torch.full((3, 3), half * 2.0)
    p3[2, 2] += half * 8.0 + 8.0
    torch.testing.assert_close(out["P3"][0, 0], p3)


# ------------------------------------------------------------------ PConv

def norm_param_count(norm: str) -> int:
    return {"": 0, "GN": 2 * C, "EvoNormS0": 3 * C, "BN": 2 * C, "SN": 2 * C}[norm]


@pytest.mark.parametrize("norm", ["", "GN", "EvoNormS0", "BN", "SN"])
def test_pconv_parameter_count(norm):
    def count(in_channels, num_layers):
        projections = sum(cin * C + C for cin in in_channels.values())
        layers = num_layers * (3 * (C * C + C) + norm_param_count(norm))  # 3 biased 1x1 convs + one norm
        return projections, layers

    for in_channels in (IN_CHANNELS_3, IN_CHANNELS_5):
        for num_layers in (1, 3):
            neck = make_neck(PConv, in_channels, norm, num_layers=num_layers)
            projections, layers = count(in_channels, num_layers)
            assert num_params(neck.projections) == projections
            assert num_params(neck.layers) == layers
            assert num_params(neck) == projections + layers
    # the layers are shared across levels: more levels add only projections; more layers add whole layers
    layers_3 = num_params(make_neck(PConv, IN_CHANNELS_3, norm, num_layers=3).layers)
    layers_5 = num_params(make_neck(PConv, IN_CHANNELS_5, norm, num_layers=3).layers)
    assert layers_3 == layers_5
    grow = num_params(make_neck(PConv, IN_CHANNELS_5, norm, num_layers=2)) - num_params(
        make_neck(PConv, IN_CHANNELS_5, norm, num_layers=1))
    assert grow == 3 * (C * C + C) + norm_param_count(norm)


def test_pconv_structure_and_sharing():
    neck = make_neck(PConv, IN_CHANNELS_5, "EvoNormS0", num_layers=3)
    for proj, cin in zip(neck.projections, IN_CHANNELS_5.values()):
        assert proj.weight.shape == (C, cin, 1, 1) and proj.bias is not None
    assert len(neck.layers) == 3
    weights = set()
    for layer in neck.layers:
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 3
        for conv in convs:
            assert conv.weight.shape == (C, C, 1, 1) and conv.bias is not None  # biased even before the norm
            weights.add(id(conv.weight))
        assert len([m for m in layer.modules() if isinstance(m, EvoNormS0)]) == 1
    assert len(weights) == 9  # different layers, different weights
    # at run time each shared module serves every level: conv_b and the norm L times per layer, conv_a / conv_c
    # L - 1 times (the finest level has no finer neighbour, the coarsest no coarser one)
    calls: Counter[str] = Counter()
    layer = neck.layers[1]
    for name in ("conv_finer", "conv_same", "conv_coarser", "norm_act"):
        getattr(layer, name).register_forward_hook(lambda module, args, output, name=name: calls.update([name]))
    neck(make_features(IN_CHANNELS_5))
    assert dict(calls) == {"conv_finer": 4, "conv_same": 5, "conv_coarser": 4, "norm_act": 5}


def ref_pconv_layer(layer: PConvLayer, xs: list[torch.Tensor], activation: str) -> list[torch.Tensor]:
    """The spec's order: convolve each neighbour, then pool (finer) or upsample (coarser), sum, act."""
    ys = []
    for i, x in enumerate(xs):
        y = ref_conv1x1(layer.conv_same, x)
        if i > 0:
            y = y + ref_same_pool(ref_conv1x1(layer.conv_finer, xs[i - 1]))
        if i < len(xs) - 1:
            y = y + ref_upsample(ref_conv1x1(layer.conv_coarser, xs[i + 1]), x.shape[-2:])
        ys.append(ref_act(activation, y))
    return ys


@pytest.mark.parametrize("num_layers,activation", [(1, "NA"), (2, "relu")])
@pytest.mark.parametrize("in_channels", [IN_CHANNELS_5, IN_CHANNELS_3], ids=["5levels", "3levels"])
def test_pconv_forward_matches_hand_computation(num_layers, activation, in_channels):
    neck = make_neck(PConv, in_channels, "", activation, num_layers=num_layers).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in neck.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    feats = make_features(in_channels, batch=2, seed=6)
    out = neck(feats)
    xs = [ref_conv1x1(proj, x) for proj, x in zip(neck.projections, feats.values())]
    for layer in neck.layers:
        xs = ref_pconv_layer(layer, xs, activation)
    for name, expected in zip(neck.out_features, xs):
        torch.testing.assert_close(out[name], expected, rtol=1e-4, atol=1e-5)


def test_pconv_shared_norm_is_applied_after_the_sum():
    """One GN after the three-way sum (the logged ``f50380a`` code), not one inside each branch."""
    neck = make_neck(PConv, IN_CHANNELS_3, "GN", "NA", num_layers=1).eval()
    feats = make_features(IN_CHANNELS_3, batch=1, seed=7)
    out = neck(feats)
    layer = neck.layers[0]
    xs = [ref_conv1x1(proj, x) for proj, x in zip(neck.projections, feats.values())]
    sums = ref_pconv_layer(layer, xs, "NA")  # the pre-norm sums
    gn = layer.norm_act.norm
    for name, y in zip(neck.out_features, sums):
        groups = y.view(1, gn.num_groups, -1)
        mean, var = groups.mean(-1, keepdim=True), groups.var(-1, unbiased=False, keepdim=True)
        normed = ((groups - mean) / torch.sqrt(var + gn.eps)).view_as(y)
        expected = normed * gn.weight.view(1, -1, 1, 1) + gn.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(out[name], expected, rtol=1e-4, atol=1e-5)
