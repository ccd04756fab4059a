"""BiFPN neck (original-spec §14): resampling helpers, shapes, structure, parameter counts, hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from od2.layers import Fusion, SeparableConv2d
from od2.modeling.necks.bifpn import BiFPN
from od2.modeling.necks.common import same_max_pool2d, upsample_nearest

W = 16  # tiny neck width (GN-divisible)


def pyramid_sizes(image_hw: tuple[int, int], first: int, num: int) -> list[tuple[int, int]]:
    """Backbone map sizes: ceil(image / 2**first), then ceil halving."""
    h, w = (math.ceil(s / 2 ** first) for s in image_hw)
    sizes = []
    for _ in range(num):
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def make_features(in_channels: dict[str, int], sizes, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, c, *hw, generator=g) for (name, c), hw in zip(in_channels.items(), sizes)}


# ----------------------------------------------------------------------------------------------- resampling helpers

def test_upsample_exact_2x_is_repeat_interleave():
    x = torch.randn(2, 3, 4, 5)
    expected = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(upsample_nearest(x, (8, 10)), expected)


def test_upsample_odd_target_takes_floor_index():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    out = upsample_nearest(x, (5, 7))
    rows = [0, 0, 1, 1, 2]  # floor(i * 3 / 5)
    cols = [0, 0, 1, 1, 2, 2, 3]  # floor(j * 4 / 7)
    assert torch.equal(out[0, 0], x[0, 0][rows][:, cols])


def test_maxpool_kernel2_divisible_is_2x2_block_max():
    x = torch.randn(2, 3, 8, 6)
    hand = torch.empty(2, 3, 4, 3)
    for i in range(4):
        for j in range(3):
            hand[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].amax((2, 3))
    assert torch.equal(same_max_pool2d(x, 2), hand)


# TF 'SAME' windows written out by hand: stride 2, out = ceil(n/2), the padding's larger half after
WINDOWS = {
    (2, 5): [[0, 1], [2, 3], [4]],
    (2, 6): [[0, 1], [2, 3], [4, 5]],
    (3, 5): [[0, 1], [1, 2, 3], [3, 4]],  # total pad 2: one before, one after
    (3, 6): [[0, 1, 2], [2, 3, 4], [4, 5]],  # total pad 1: after only
}


@pytest.mark.parametrize("kernel", [2, 3])
def test_maxpool_same_windows_odd_and_even(kernel):
    x = -torch.rand(1, 2, 5, 6) - 1.0  # all negative: a zero-padded pool would differ at the edges
    out = same_max_pool2d(x, kernel)
    rows, cols = WINDOWS[(kernel, 5)], WINDOWS[(kernel, 6)]
    assert out.shape == (1, 2, 3, 3)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            torch.testing.assert_close(out[:, :, i, j], x[:, :, r][:, :, :, c].amax((2, 3)), rtol=0, atol=0)
    if kernel == 2:  # the brief's formulation of the original's pool
        assert torch.equal(out, F.max_pool2d(x, 2, 2, ceil_mode=True))


def test_maxpool_kernel3_even_is_not_symmetric_padding():
    x = torch.randn(1, 1, 8, 8)
    # PyTorch's symmetric padding=1 shifts the windows on even sizes; TF pads after only
    assert not torch.equal(same_max_pool2d(x, 3), F.max_pool2d(x, 3, 2, padding=1))
    torch.testing.assert_close(same_max_pool2d(x, 3), F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=-1e9), 3, 2))


# ----------------------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("num_inputs,num_extra,kernel,separable", [
    (5, 0, 2, False),  # the original: C3..C7 from the backbone
    (3, 2, 3, True),  # the paper: P6, P7 made by the neck
    (3, 0, 2, False),  # L = 3
    (2, 0, 3, False),  # L = 2
    (2, 1, 2, True),
])
def test_output_names_strides_shapes_odd_image(num_inputs, num_extra, kernel, separable):
    image = (97, 130)
    in_channels = {f"C{3 + i}": 4 + 2 * i for i in range(num_inputs)}
    num_levels = num_inputs + num_extra
    sizes = pyramid_sizes(image, 3, num_levels)
    # ceil(97/8) x ceil(130/8), then ceil halving
    assert sizes == [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)][:num_levels]
    neck = BiFPN(in_channels, W, norm="GN", activation="swish", num_cells=2, num_extra_levels=num_extra,
                 separable=separable, downsample_kernel=kernel)
    names = [f"P{3 + i}" for i in range(num_levels)]
    assert neck.in_features == list(in_channels)
    assert neck.out_features == names
    assert neck.out_channels == {n: W for n in names}
    assert neck.strides == {n: 2 ** (3 + i) for i, n in enumerate(names)}
    out = neck(make_features(in_channels, sizes[:num_inputs]))
    assert list(out) == names
    for name, hw in zip(names, sizes):
        assert out[name].shape == (2, W, *hw)
        assert torch.isfinite(out[name]).all()


def test_inputs_that_do_not_halve_with_ceil_are_rejected():
    neck = BiFPN({"C3": 4, "C4": 4}, W, num_cells=1)
    with pytest.raises(ValueError, match="halve"):
        neck({"C3": torch.randn(1, 4, 5, 5), "C4": torch.randn(1, 4, 2, 2)})  # floor halving


def test_non_consecutive_levels_are_rejected():
    with pytest.raises(ValueError, match="consecutive"):
        BiFPN({"C3": 4, "C5": 4}, W)


def test_extra_levels_are_pooled_from_own_projection_of_coarsest_input():
    in_channels = {"C3": 4, "C4": 6, "C5": 8}
    neck = BiFPN(in_channels, W, norm="BN", num_cells=1, num_extra_levels=2, downsample_kernel=3).eval()
    feats = make_features(in_channels, [(12, 10), (6, 5), (3, 3)])
    seen = []
    neck.cells[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    neck(feats)
    levels = seen[0]
    assert len(levels) == 5
    for k, name in enumerate(in_channels):
        torch.testing.assert_close(levels[k], neck.input_proj[k](feats[name]))
    proj = neck.extra_proj(feats["C5"])  # its own 1x1 conv + BN, not C5's input projection
    assert neck.extra_proj is not neck.input_proj[2]
    # 3x3 'SAME' windows on 3 -> 2: rows {0,1}, {1,2}; on 2 -> 1: {0,1}
    p6 = torch.stack([torch.stack([proj[:, :, r][:, :, :, c].amax((2, 3)) for c in ([0, 1], [1, 2])], -1)
                      for r in ([0, 1], [1, 2])], -2)
    torch.testing.assert_close(levels[3], p6)
    torch.testing.assert_close(levels[4], p6.amax((2, 3), keepdim=True))


# ---------------------------------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("norm", ["GN", "EvoNormS0", "BN", ""])
@pytest.mark.parametrize("num_extra", [0, 2])
def test_gradients_reach_every_parameter(norm, num_extra):
    in_channels = {"C3": 4, "C4": 6, "C5": 8} if num_extra else {"C3": 4, "C4": 6, "C5": 8, "C6": 8}
    neck = BiFPN(in_channels, W, norm=norm, activation="swish", num_cells=2, num_extra_levels=num_extra).train()
    sizes = pyramid_sizes((75, 90), 3, len(in_channels))
    out = neck(make_features(in_channels, sizes))
    g = torch.Generator().manual_seed(1)
    # a random projection: a plain sum would give GN/BN affine weights zero gradient
    loss = sum((y * torch.randn(y.shape, generator=g)).sum() for y in out.values())
    loss.backward()
    fusion_weights = {id(m.weight) for m in neck.modules() if isinstance(m, Fusion)}
    assert len(fusion_weights) == 2 * 2 * (len(in_channels) + num_extra - 1)
    for name, p in neck.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
        fusion_weights.discard(id(p))
    assert not fusion_weights  # every fusion weight is a registered, trained parameter


# ---------------------------------------------------------------------------------------------------------- structure

@pytest.mark.parametrize("num_levels", [2, 3, 5])
def test_cell_structure_regular_convs(num_levels):
    in_channels = {f"C{3 + i}": 8 for i in range(num_levels)}
    neck = BiFPN(in_channels, W, norm="GN", num_cells=3)
    assert len(neck.cells) == 3
    for cell in neck.cells:
        fusions = [m for m in cell.modules() if isinstance(m, Fusion)]
        assert len(fusions) == 2 * (num_levels - 1)
        assert all(f.fuse_type == "wsum" for f in fusions)
        assert [f.num_inputs for f in cell.td_fusions] == [2] * (num_levels - 1)
        assert [f.num_inputs for f in cell.bu_fusions] == [3] * (num_levels - 2) + [2]
        convs = [m for m in cell.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 2 * (num_levels - 1)
        for conv in convs:
            assert conv.weight.shape == (W, W, 3, 3) and conv.groups == 1 and conv.bias is None
        assert not any(isinstance(m, SeparableConv2d) for m in cell.modules())
        assert not any(isinstance(m, nn.SiLU) for block in cell.td_convs for m in block.modules())  # no post-act
    # cells do not share weights
    ids = [{id(p) for p in cell.parameters()} for cell in neck.cells]
    assert all(not (ids[i] & ids[j]) for i in range(3) for j in range(i + 1, 3))
    # every input level gets its own 1x1 projection, even when it already has W channels
    neck_w = BiFPN({f"C{3 + i}": W for i in range(num_levels)}, W, norm="GN")
    assert len(neck_w.input_proj) == num_levels
    assert all(p.conv.weight.shape == (W, W, 1, 1) and p.conv.bias is None for p in neck_w.input_proj)


def test_cell_structure_separable_convs():
    neck = BiFPN({"C3": 8, "C4": 8, "C5": 8}, W, norm="BN", num_cells=2, separable=True)
    for cell in neck.cells:
        blocks = list(cell.td_convs) + list(cell.bu_convs)
        assert len(blocks) == 4
        for block in blocks:
            assert isinstance(block.conv, SeparableConv2d)
            assert block.conv.depthwise.weight.shape == (W, 1, 3, 3) and block.conv.depthwise.groups == W
            assert block.conv.pointwise.weight.shape == (W, W, 1, 1)
            assert block.conv.depthwise.bias is None and block.conv.pointwise.bias is None  # BN follows


# -------------------------------------------------------------------------------------------------- parameter counts

def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_original_d0_style():
    # the original: W = 64, 3 cells, five input levels (C6/C7 from the backbone), GN, regular 3x3 convs
    chans, width, cells, levels = [40, 112, 320, 256, 256], 64, 3, 5
    neck = BiFPN({f"C{3 + i}": c for i, c in enumerate(chans)}, width, norm="GN", activation="swish",
                 num_cells=cells)
    proj = sum(c * width + 2 * width for c in chans)  # 1x1 without bias + GN affine
    conv = 9 * width * width + 2 * width  # regular 3x3 without bias + GN affine
    fusion = 2 * (levels - 1) + 3 * (levels - 2) + 2  # top-down nodes, intermediate and top bottom-up nodes
    expected = proj + cells * (2 * (levels - 1) * conv + fusion)
    assert expected == 951_481
    assert count(neck) == expected


def test_parameter_count_paper_d0():
    # EfficientDet-D0's BiFPN: W = 64, 3 cells, C3..C5 = 40/112/320 + P6/P7 made by the neck, separable convs, BN
    chans, width, cells, levels = [40, 112, 320], 64, 3, 5
    neck = BiFPN({f"C{3 + i}": c for i, c in enumerate(chans)}, width, norm="BN", activation="swish",
                 num_cells=cells, num_extra_levels=2, separable=True, downsample_kernel=3)
    proj = sum(c * width + 2 * width for c in chans)
    p6 = 320 * width + 2 * width  # P6's own 1x1 conv + BN on C5 (P7 is a pool: no parameters)
    conv = 9 * width + width * width + 2 * width  # depthwise 3x3 + pointwise 1x1, no bias, + BN affine
    fusion = 2 * (levels - 1) + 3 * (levels - 2) + 2
    expected = proj + p6 + cells * (2 * (levels - 1) * conv + fusion)
    assert expected == 166_457
    assert count(neck) == expected


# ----------------------------------------------------------------------------------------------- hand-computed values

TD_W = [[0.7, 1.3], [-0.2, 2.0]]  # td node of level 0, level 1; the negative weight is clipped to 0 by relu
BU_W = [[1.0, 0.5, 2.0], [0.3, 0.9]]  # bu node of level 1 (3 inputs), level 2 (2 inputs)


def fuse(weights, maps):
    w = [max(v, 0.0) for v in weights]
    total = sum(w) + 1e-4
    return sum(wi / total * m for wi, m in zip(w, maps))


def mix(x, m, b):
    """1x1 conv by hand: [C, C] matrix + bias on [B, C, H, W]."""
    return torch.einsum("oc,bchw->bohw", m, x) + b.view(1, -1, 1, 1)


def up2(x):
    return x.repeat_interleave(2, 2).repeat_interleave(2, 3)


def down2(x):
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).amax((3, 5))


@pytest.mark.parametrize("activation", ["NA", "relu"])
def test_one_cell_values_by_hand(activation):
    c = 2
    neck = BiFPN({"C3": c, "C4": c, "C5": c}, c, norm="", activation=activation, num_cells=1).double()
    g = torch.Generator().manual_seed(3)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    proj = [(rand(c, c), rand(c)) for _ in range(3)]
    td_mats = [(rand(c, c), rand(c)) for _ in range(2)]
    bu_mats = [(rand(c, c), rand(c)) for _ in range(2)]
    cell = neck.cells[0]
    with torch.no_grad():
        for block, (m, b) in zip(neck.input_proj, proj):
            block.conv.weight.copy_(m.view(c, c, 1, 1))
            block.conv.bias.copy_(b)
        for block, (m, b) in zip(list(cell.td_convs) + list(cell.bu_convs), td_mats + bu_mats):
            block.conv.weight.zero_()
            block.conv.weight[:, :, 1, 1] = m  # centre-only 3x3: a 1x1 mix, zero padding never reached
            block.conv.bias.copy_(b)
        for fusion, w in zip(list(cell.td_fusions) + list(cell.bu_fusions), TD_W + BU_W):
            fusion.weight.copy_(torch.tensor(w, dtype=torch.float64))
    feats = {"C3": rand(2, c, 8, 8), "C4": rand(2, c, 4, 4), "C5": rand(2, c, 2, 2)}
    out = neck(feats)

    act = torch.relu if activation == "relu" else (lambda x: x)
    in0, in1, in2 = (mix(feats[n], m, b) for n, (m, b) in zip(("C3", "C4", "C5"), proj))
    td1 = mix(act(fuse(TD_W[1], [up2(in2), in1])), *td_mats[1])
    td0 = mix(act(fuse(TD_W[0], [up2(td1), in0])), *td_mats[0])
    out1 = mix(act(fuse(BU_W[0], [in1, down2(td0), td1])), *bu_mats[0])
    out2 = mix(act(fuse(BU_W[1], [down2(out1), in2])), *bu_mats[1])
    torch.testing.assert_close(out["P3"], td0)
    torch.testing.assert_close(out["P4"], out1)
    torch.testing.assert_close(out["P5"], out2)


def test_fusion_weights_start_at_one():
    neck = BiFPN({"C3": 4, "C4": 4}, W, num_cells=1)
    for f in neck.modules():
        if isinstance(f, Fusion):
            assert torch.equal(f.weight.detach(), torch.ones(f.num_inputs))
