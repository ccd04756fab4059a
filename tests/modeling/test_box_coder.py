"""Box coder against the closed formula and torchvision's BoxCoder."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from od2.modeling.box_coder import BoxCoder


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 200
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 100 + 1
    return torch.cat([xy, xy + wh], dim=1)


def formula_encode(anchor, box, weights):
    wx, wy, ww, wh = weights
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    ax, ay = anchor[0] + aw / 2, anchor[1] + ah / 2
    gw, gh = box[2] - box[0], box[3] - box[1]
    gx, gy = box[0] + gw / 2, box[1] + gh / 2
    return [wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * math.log(gw / aw), wh * math.log(gh / ah)]


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_matches_formula(weights):
    g = torch.Generator().manual_seed(0)
    anchors, boxes = random_boxes(20, g), random_boxes(20, g)
    got = BoxCoder(weights).encode(anchors.float(), boxes.float())
    expected = torch.tensor([formula_encode(a.tolist(), b.tolist(), weights) for a, b in zip(anchors, boxes)])
    assert got.shape == (20, 4)
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip(weights):
    g = torch.Generator().manual_seed(1)
    anchors, boxes = random_boxes(50, g).float(), random_boxes(50, g).float()
    coder = BoxCoder(weights)
    torch.testing.assert_close(coder.decode(anchors, coder.encode(anchors, boxes)), boxes, rtol=1e-4, atol=1e-3)


def test_decode_matches_formula_and_broadcasts():
    anchors = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size (20, 40)
    deltas = torch.tensor([[[0.5, -0.25, math.log(2.0), math.log(0.5)]]])  # [1, 1, 4]: leading dims broadcast
    out = BoxCoder().decode(anchors, deltas)
    # centre (20 + 0.5*20, 40 - 0.25*40) = (30, 30); size (40, 20)
    torch.testing.assert_close(out, torch.tensor([[[10.0, 20.0, 50.0, 40.0]]]))
    out_w = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(anchors, deltas * torch.tensor([10.0, 10.0, 5.0, 5.0]))
    torch.testing.assert_close(out_w, out)


def test_decode_clamps_huge_sizes():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    deltas = torch.tensor([[0.0, 0.0, 1e4, 1e4]])
    out = BoxCoder().decode(anchors, deltas)
    assert torch.isfinite(out).all()
    clip = math.log(1000.0 / 16)
    width = 16 * math.exp(clip)  # = 1000
    torch.testing.assert_close(out, torch.tensor([[8 - width / 2, 8 - width / 2, 8 + width / 2, 8 + width / 2]]))
    # very negative sizes shrink to ~0, never NaN
    tiny = BoxCoder().decode(anchors, torch.tensor([[0.0, 0.0, -1e4, -1e4]]))
    assert torch.isfinite(tiny).all()
    torch.testing.assert_close(tiny, torch.tensor([[8.0, 8.0, 8.0, 8.0]]))


def test_decode_half_precision_deltas():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = BoxCoder().decode(anchors, torch.tensor([[0.0, 0.0, 100.0, 100.0]], dtype=torch.float16))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_matches_torchvision(weights):
    """torchvision >= 0.3 has no "+1" in widths (checked: decode_single uses x2 - x1), same (dx, dy, dw, dh) order
    and the same log(1000/16) clamp, so outputs agree exactly up to float error."""
    g = torch.Generator().manual_seed(2)
    anchors, boxes = random_boxes(30, g).float(), random_boxes(30, g).float()
    ours, theirs = BoxCoder(weights), TVBoxCoder(weights)
    # torchvision: encode(reference_boxes=list of gt, proposals=list of anchors) -> tuple per image
    tv_deltas = theirs.encode([boxes], [anchors])[0]
    torch.testing.assert_close(ours.encode(anchors, boxes), tv_deltas, rtol=1e-5, atol=1e-5)
    # torchvision: decode(rel_codes [N, 4*k], boxes=list of anchors) -> [N, k, 4]
    deltas = torch.randn(30, 4, generator=g) * 2
    deltas[:3, 2:] = 20.0  # exercise the clamp too
    tv_boxes = theirs.decode(deltas, [anchors]).reshape(30, 4)
    torch.testing.assert_close(ours.decode(anchors, deltas), tv_boxes, rtol=1e-5, atol=1e-3)
