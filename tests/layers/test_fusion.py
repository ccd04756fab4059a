"""od2.layers.Fusion (sum and EfficientDet's fast normalised weighted sum) and the FPN's MODEL.FPN.FUSE_TYPE."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from od2.config import load_config
from od2.layers import Fusion
from od2.modeling.build import build_model
from od2.modeling.necks import FPN


def maps(n: int, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(n)
    return [torch.randn(2, 3, 5, 7, generator=gen, dtype=dtype) for _ in range(n)]


def test_wsum_is_the_fast_normalised_fusion_formula():
    fusion = Fusion(3, "wsum").double()
    xs = maps(3)
    # initialised to 1: the mean, up to eps
    torch.testing.assert_close(fusion(xs), (xs[0] + xs[1] + xs[2]) / (3 + 1e-4))
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
    expected = (2.0 * xs[0] + 0.0 * xs[1] + 0.5 * xs[2]) / (2.5 + 1e-4)  # relu(-1) = 0
    torch.testing.assert_close(fusion(xs), expected)
    fusion(xs).sum().backward()
    assert fusion.weight.grad[1] == 0 and fusion.weight.grad[0] != 0 and fusion.weight.grad[2] != 0


def test_sum_has_no_parameters_and_adds():
    fusion = Fusion(3, "sum")
    xs = maps(3, torch.float32)
    assert not list(fusion.parameters())
    torch.testing.assert_close(fusion(xs), xs[0] + xs[1] + xs[2])


def test_fusion_keeps_low_precision_dtypes():
    xs = maps(2, torch.bfloat16)
    assert Fusion(2, "wsum")(xs).dtype == torch.bfloat16


def test_fusion_rejects_bad_arguments():
    with pytest.raises(ValueError, match="fuse type"):
        Fusion(2, "max")
    with pytest.raises(ValueError, match="2 inputs got 3"):
        Fusion(2, "wsum")(maps(3))


def test_fpn_wsum_fuses_each_top_down_step():
    torch.manual_seed(0)
    fpn = FPN({"C3": 8, "C4": 16, "C5": 32}, out_channels=8, fuse_type="wsum").double()
    with torch.no_grad():
        fpn.fuse[0].weight.copy_(torch.tensor([0.3, 2.0]))
        fpn.fuse[1].weight.copy_(torch.tensor([1.5, -0.2]))
    shapes = {"C3": (8, 20, 26), "C4": (16, 10, 13), "C5": (32, 5, 7)}
    feats = {name: torch.randn(1, *shape, dtype=torch.float64) for name, shape in shapes.items()}
    out = fpn(feats)
    # Re-derived with the formula, using the FPN's own convolutions.
    m5 = fpn.lateral[2](feats["C5"])
    m4 = (1.5 * fpn.lateral[1](feats["C4"]) + 0.0 * F.interpolate(m5, size=(10, 13))) / (1.5 + 1e-4)
    m3 = (0.3 * fpn.lateral[0](feats["C3"]) + 2.0 * F.interpolate(m4, size=(20, 26))) / (2.3 + 1e-4)
    torch.testing.assert_close(out["P3"], fpn.output[0](m3))
    torch.testing.assert_close(out["P4"], fpn.output[1](m4))
    assert [tuple(out[k].shape[-2:]) for k in ("P5", "P6", "P7")] == [(5, 7), (3, 4), (2, 2)]
    sum(v.sum() for v in out.values()).backward()
    assert all(f.weight.grad is not None for f in fpn.fuse)


def test_fuse_type_from_config():
    base = ["MODEL.BACKBONE.NAME=efficientnet_lite0", "MODEL.FPN.OUT_CHANNELS=16", "MODEL.DEVICE=cpu"]
    model = build_model(load_config(None, [*base, "MODEL.FPN.FUSE_TYPE=wsum"]), num_classes=3)
    assert [name for name, _ in model.neck.named_parameters() if name.startswith("fuse")] == ["fuse.0.weight",
                                                                                           "fuse.1.weight"]
    plain = build_model(load_config(None, base), num_classes=3)
    assert not [name for name in plain.state_dict() if name.startswith("neck.fuse")]  # old checkpoints still load
    with pytest.raises(ValueError, match="MODEL.FPN.FUSE_TYPE"):
        build_model(load_config(None, [*base, "MODEL.FPN.FUSE_TYPE=max"]), num_classes=3)
