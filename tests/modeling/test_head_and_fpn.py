"""RetinaNet head (shared convs, per-level norms, output layout) and the FPN neck (original-spec §3.3-3.4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from od2.layers import get_norm
from od2.layers.evonorm import EvoNormS0
from od2.layers.spectral_norm import SpectralNorm2d
from od2.layers.switch_norm import SwitchNorm2d
from od2.modeling.anchors import AnchorGenerator
from od2.modeling.necks.fpn import FPN
from od2.modeling.retinanet_head import RetinaNetHead

C = 16  # channels: tiny, and divisible so GN builds


def make_head(norm: str = "", num_levels: int = 3, num_convs: int = 2, A: int = 3, K: int = 4, prior=0.01):
    return RetinaNetHead(C, A, K, num_levels, num_convs=num_convs, norm=norm, prior_prob=prior)


def conv_modules(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("norm,norm_type,params_per_norm", [
    ("BN", nn.BatchNorm2d, 2 * C), ("GN", nn.GroupNorm, 2 * C), ("EvoNormS0", EvoNormS0, 3 * C),
    ("SN", SpectralNorm2d, 2 * C), ("SwitchNorm", SwitchNorm2d, 2 * C + 6),
])
def test_convs_shared_norms_per_level(norm, norm_type, params_per_norm):
    num_convs, num_levels = 3, 5
    head = make_head(norm, num_levels=num_levels, num_convs=num_convs)
    for tower in (head.cls_tower, head.box_tower):
        assert len(conv_modules(tower)) == num_convs  # one conv per tower layer, whatever the level count
        norms = [m for m in tower.modules() if isinstance(m, norm_type)]
        assert len(norms) == num_convs * num_levels
        assert len({id(m) for m in norms}) == num_convs * num_levels
        assert len({id(m.weight) for m in norms}) == num_convs * num_levels  # own affine parameters
        assert all(c.bias is None for c in conv_modules(tower))  # conv before a norm has no bias
    # conv parameter count does not grow with the number of levels; norm parameters do
    def counts(levels):
        h = make_head(norm, num_levels=levels, num_convs=num_convs)
        conv = sum(p.numel() for m in conv_modules(h) for p in m.parameters())
        return conv, sum(p.numel() for p in h.parameters()) - conv
    (conv3, norm3), (conv5, norm5) = counts(3), counts(5)
    assert conv3 == conv5 and norm5 - norm3 == 2 * 2 * num_convs * params_per_norm  # 2 towers, 2 extra levels


def test_bn_statistics_are_per_level():
    head = make_head("BN", num_levels=2, num_convs=1).train()
    feats = [torch.randn(2, C, 4, 4), torch.randn(2, C, 3, 3) * 5 + 3]
    head(feats)
    bn0, bn1 = head.cls_tower.norm_acts[0][0].norm, head.cls_tower.norm_acts[0][1].norm
    assert not torch.allclose(bn0.running_mean, bn1.running_mean)
    assert bn0.num_batches_tracked.item() == bn1.num_batches_tracked.item() == 1


def test_same_input_same_output_on_every_level_without_norm():
    head = make_head("", num_levels=3).eval()
    x = torch.randn(1, C, 5, 6)
    logits, deltas = head([x, x, x])
    torch.testing.assert_close(logits[0], logits[2])
    torch.testing.assert_close(deltas[1], deltas[2])


def test_output_shapes():
    A, K, B = 3, 4, 2
    head = make_head("GN", num_levels=3, A=A, K=K)
    sizes = [(6, 7), (3, 4), (1, 2)]
    logits, deltas = head([torch.randn(B, C, h, w) for h, w in sizes])
    assert len(logits) == len(deltas) == 3
    for (h, w), lg, dl in zip(sizes, logits, deltas):
        assert lg.shape == (B, h * w * A, K)
        assert dl.shape == (B, h * w * A, 4)


@pytest.mark.parametrize("prior", [0.01, 0.1])
def test_class_bias_prior(prior):
    head = make_head(prior=prior)
    expected = -math.log((1 - prior) / prior)
    torch.testing.assert_close(head.cls_score.bias, torch.full_like(head.cls_score.bias, expected))
    assert torch.count_nonzero(head.bbox_pred.bias) == 0
    # initial class probabilities are about the prior
    logits, _ = head.eval()([torch.randn(1, C, 3, 3)])
    assert abs(torch.sigmoid(logits[0]).mean().item() - prior) < 0.01 * prior + 1e-3


def test_flattening_order_matches_anchors():
    """Logit (n, k) at position n of a level must belong to the anchor at position n of that level."""
    A, K, B = 3, 4, 2
    sizes, strides = [(3, 5), (2, 3)], [8, 16]
    head = make_head("", num_levels=2, num_convs=1, A=A, K=K)
    with torch.no_grad():
        for tower in (head.cls_tower, head.box_tower):  # tower conv = identity (inputs are >= 0, ReLU keeps them)
            conv = tower.convs[0]
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(C):
                conv.weight[c, c, 1, 1] = 1.0
        # feature channel 0 = y, channel 1 = x, channel 2 = image index; predictor centre taps read them
        head.cls_score.weight.zero_()
        head.cls_score.weight[:, 0, 1, 1] = 10000.0
        head.cls_score.weight[:, 1, 1, 1] = 100.0
        head.cls_score.weight[:, 2, 1, 1] = 1000000.0
        head.cls_score.bias.copy_(torch.arange(A * K, dtype=torch.float32))  # channel a*K + k
        head.bbox_pred.weight.zero_()
        head.bbox_pred.weight[:, 0, 1, 1] = 10000.0
        head.bbox_pred.weight[:, 1, 1, 1] = 100.0
        head.bbox_pred.bias.copy_(torch.arange(A * 4, dtype=torch.float32))  # channel a*4 + j
    feats = []
    for h, w in sizes:
        f = torch.zeros(B, C, h, w)
        f[:, 0] = torch.arange(h, dtype=torch.float32)[:, None]
        f[:, 1] = torch.arange(w, dtype=torch.float32)[None, :]
        f[:, 2] = torch.arange(B, dtype=torch.float32)[:, None, None]
        feats.append(f)
    logits, deltas = head(feats)
    anchors = AnchorGenerator([[16.0]], [[0.5, 1.0, 2.0]], strides)(sizes, torch.device("cpu"))
    for level, ((h, w), stride) in enumerate(zip(sizes, strides)):
        n = 0
        for y in range(h):
            for x in range(w):
                for a in range(A):
                    # the anchor at n is cell (y, x), cell anchor a (ratio a)
                    anc = anchors[level][n]
                    assert ((anc[0] + anc[2]) / 2).item() == pytest.approx((x + 0.5) * stride)
                    assert ((anc[1] + anc[3]) / 2).item() == pytest.approx((y + 0.5) * stride)
                    ratio = ((anc[2] - anc[0]) / (anc[3] - anc[1])).item()
                    assert ratio == pytest.approx([0.5, 1.0, 2.0][a], rel=1e-4)
                    for b in range(B):
                        for k in range(K):
                            assert logits[level][b, n, k].item() == 1000000 * b + 10000 * y + 100 * x + a * K + k
                        for j in range(4):
                            assert deltas[level][b, n, j].item() == 10000 * y + 100 * x + a * 4 + j
                    n += 1
        assert n == logits[level].shape[1]


# -------------------------------------------------------------- FPN

IN_CHANNELS = {"C3": 8, "C4": 12, "C5": 20}
ODD_SIZES = {"C3": (13, 17), "C4": (7, 9), "C5": (4, 5)}
EXPECTED = {"P3": (13, 17), "P4": (7, 9), "P5": (4, 5), "P6": (2, 3), "P7": (1, 2)}


def odd_features(batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(batch, IN_CHANNELS[k], *hw, generator=g) for k, hw in ODD_SIZES.items()}


@pytest.mark.parametrize("norm", ["", "BN", "GN", "FrozenBN", "SyncBN"])
def test_fpn_levels_shapes_strides(norm):
    fpn = FPN(IN_CHANNELS, out_channels=C, norm=norm)
    out = fpn(odd_features())
    assert list(out) == ["P3", "P4", "P5", "P6", "P7"] == fpn.out_features
    for name, hw in EXPECTED.items():
        assert out[name].shape == (2, C, *hw), name
    assert fpn.strides == {"P3": 8, "P4": 16, "P5": 32, "P6": 64, "P7": 128}
    assert fpn.out_channels == {name: C for name in EXPECTED}
    # and the head consumes them with any norm
    head = make_head(norm, num_levels=5)
    logits, deltas = head([out[n] for n in fpn.out_features])
    assert [lg.shape[1] for lg in logits] == [h * w * 3 for h, w in EXPECTED.values()]


def test_fpn_matches_manual_top_down():
    """P3..P5: 3x3(relu) of lateral 1x1 + nearest-upsampled merged map above; P6/P7 from C5 (spec §3.3)."""
    fpn = FPN(IN_CHANNELS, out_channels=C, norm="").eval()
    feats = odd_features(1)
    out = fpn(feats)

    def conv(block_or_conv, x, stride=1):
        c = block_or_conv if isinstance(block_or_conv, nn.Conv2d) else block_or_conv.conv
        return F.conv2d(x, c.weight, c.bias, stride=stride, padding=c.kernel_size[0] // 2)

    m5 = conv(fpn.lateral[2], feats["C5"])
    m4 = conv(fpn.lateral[1], feats["C4"]) + F.interpolate(m5, size=(7, 9), mode="nearest")
    m3 = conv(fpn.lateral[0], feats["C3"]) + F.interpolate(m4, size=(13, 17), mode="nearest")
    p6 = F.relu(conv(fpn.extra[0], feats["C5"], stride=2))
    p7 = F.relu(conv(fpn.extra[1], p6, stride=2))
    expected = {"P3": F.relu(conv(fpn.output[0], m3)), "P4": F.relu(conv(fpn.output[1], m4)),
                "P5": F.relu(conv(fpn.output[2], m5)), "P6": p6, "P7": p7}
    for name in EXPECTED:
        torch.testing.assert_close(out[name], expected[name], rtol=1e-4, atol=1e-5)


def test_fpn_p6_p7_come_from_c5_only():
    fpn = FPN(IN_CHANNELS, out_channels=C).eval()
    feats = odd_features(1)
    base = fpn(feats)
    feats["C3"] = feats["C3"] + 1.0
    moved = fpn(feats)
    assert not torch.allclose(base["P3"], moved["P3"])
    for name in ("P4", "P5", "P6", "P7"):
        torch.testing.assert_close(base[name], moved[name])


def test_get_norm_names():
    assert get_norm("", 8) is None
    assert isinstance(get_norm("BN", 8), nn.BatchNorm2d)
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
    assert get_norm("GN", 24).num_groups == 8  # falls back to a divisor of the channel count
    assert type(get_norm("FrozenBN", 8)).__name__ == "FrozenBatchNorm2d"


@pytest.mark.parametrize("builder", [
    lambda: FPN(IN_CHANNELS, out_channels=C, norm="BatchNorm"),
    lambda: make_head("BatchNorm"),
    lambda: get_norm("BatchNorm", C),
])
def test_unknown_norm_lists_valid_names(builder):
    with pytest.raises(ValueError) as info:
        builder()
    msg = str(info.value)
    assert "BatchNorm" in msg
    for valid in ("'BN'", "'GN'", "'FrozenBN'", "''"):
        assert valid in msg


@pytest.mark.parametrize("extra_from, torchvision_in", [("P5", 16), ("C5", 40)])
def test_fpn_torchvision_layout_matches_torchvision(extra_from, torchvision_in):
    """EXTRA_FROM and ACTIVATE_OUTPUTS=False give torchvision's FeaturePyramidNetwork + LastLevelP6P7 (P6 from P5
    when its in and out channels agree, as retinanet_resnet50_fpn; from C5 otherwise, as ..._v2), with the same
    weights copied in: no activation on the outputs, a ReLU between P6 and P7."""
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

    torch.manual_seed(0)
    in_channels = {"C3": 8, "C4": 24, "C5": 40}
    reference = FeaturePyramidNetwork(list(in_channels.values()), 16, LastLevelP6P7(torchvision_in, 16)).eval()
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.2)
    fpn = FPN(in_channels, 16, norm="", activation="relu", extra_from=extra_from, activate_outputs=False).eval()
    for i in range(3):
        for ours, theirs in ((fpn.lateral[i], reference.inner_blocks[i][0]), (fpn.output[i].conv,
                                                                              reference.layer_blocks[i][0])):
            ours.load_state_dict(theirs.state_dict())
    fpn.extra[0].conv.load_state_dict(reference.extra_blocks.p6.state_dict())
    fpn.extra[1].conv.load_state_dict(reference.extra_blocks.p7.state_dict())
    inputs = {"C3": torch.randn(2, 8, 20, 28), "C4": torch.randn(2, 24, 10, 14), "C5": torch.randn(2, 40, 5, 7)}
    with torch.no_grad():
        expected = list(reference(dict(enumerate(inputs.values()))).values())
        got = list(fpn(inputs).values())
    assert (expected[3] < 0).any() and (expected[4] < 0).any()  # P6, P7 not rectified: the test can tell
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_fpn_rejects_unknown_extra_from():
    with pytest.raises(ValueError, match="extra_from"):
        FPN({"C3": 8, "C4": 8, "C5": 8}, 8, extra_from="P4")
