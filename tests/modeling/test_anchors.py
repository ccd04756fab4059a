"""Anchor generator against a plain-Python construction of the spec formula (original-spec §3.5)."""

from __future__ import annotations

import math

import pytest
import torch

from od2.modeling.anchors import AnchorGenerator


def reference_anchors(h: int, w: int, stride: int, sizes, ratios) -> list[list[float]]:
    """(y, x, anchor) order, anchors ratio-major / size-minor, h = s/sqrt(r), w = s*sqrt(r)."""
    out = []
    for i in range(h):
        for j in range(w):
            cy, cx = (i + 0.5) * stride, (j + 0.5) * stride
            for r in ratios:
                for s in sizes:
                    aw, ah = s * math.sqrt(r), s / math.sqrt(r)
                    out.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    return out


def test_count_per_level():
    sizes = [[32.0, 40.0], [64.0, 80.0], [128.0, 160.0]]
    ratios = [[0.5, 1.0, 2.0]]
    gen = AnchorGenerator(sizes, ratios, [8, 16, 32])
    assert gen.num_anchors == 6
    feature_sizes = [(5, 7), (3, 4), (1, 2)]
    anchors = gen(feature_sizes, torch.device("cpu"))
    assert len(anchors) == 3
    for (h, w), a in zip(feature_sizes, anchors):
        assert a.shape == (h * w * 6, 4)
        assert a.dtype == torch.float32


def test_every_anchor_matches_the_loop():
    sizes = [[32.0, 40.317, 50.797], [64.0, 80.635, 101.594]]
    ratios = [[0.5, 1.0, 2.0], [0.25, 1.0, 3.0]]
    strides = [8, 16]
    feature_sizes = [(3, 4), (2, 3)]
    anchors = AnchorGenerator(sizes, ratios, strides)(feature_sizes, torch.device("cpu"))
    for level in range(2):
        h, w = feature_sizes[level]
        expected = torch.tensor(reference_anchors(h, w, strides[level], sizes[level], ratios[level]),
                                dtype=torch.float64)
        assert anchors[level].shape == expected.shape
        torch.testing.assert_close(anchors[level].double(), expected, rtol=0, atol=1e-4)


def test_anchor_shape_properties():
    """Area = size^2 and w/h = ratio, checked independently of the ordering."""
    gen = AnchorGenerator([[20.0, 30.0]], [[0.5, 2.0]], [4])
    a = gen([(1, 1)], torch.device("cpu"))[0].double()
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    # ratio-major: (r=0.5, s=20), (0.5, 30), (2, 20), (2, 30)
    torch.testing.assert_close(w * h, torch.tensor([400.0, 900.0, 400.0, 900.0], dtype=torch.float64))
    torch.testing.assert_close(w / h, torch.tensor([0.5, 0.5, 2.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close((a[:, 0] + a[:, 2]) / 2, torch.full((4,), 2.0, dtype=torch.float64))


def test_one_size_list_is_broadcast():
    sizes, ratios = [[16.0, 24.0]], [[1.0, 2.0]]
    strides = [8, 16, 32]
    feature_sizes = [(2, 2), (2, 1), (1, 1)]
    anchors = AnchorGenerator(sizes, ratios, strides)(feature_sizes, torch.device("cpu"))
    for level, ((h, w), stride) in enumerate(zip(feature_sizes, strides)):
        expected = torch.tensor(reference_anchors(h, w, stride, sizes[0], ratios[0]))
        torch.testing.assert_close(anchors[level], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("sizes,ratios", [
    ([[32.0], [64.0]], [[1.0]]),            # 2 size lists, 3 levels
    ([[32.0]], [[1.0], [2.0]]),             # 2 ratio lists, 3 levels
    ([[1.0], [2.0], [3.0], [4.0]], [[1.0]]),
])
def test_mismatched_list_lengths(sizes, ratios):
    with pytest.raises(ValueError):
        AnchorGenerator(sizes, ratios, [8, 16, 32])


def test_different_anchor_counts_per_level_rejected():
    with pytest.raises(ValueError):
        AnchorGenerator([[32.0], [64.0, 80.0]], [[1.0]], [8, 16])


def test_new_feature_sizes_give_new_anchors():
    gen = AnchorGenerator([[8.0]], [[1.0]], [8])
    a = gen([(1, 1)], torch.device("cpu"))[0]
    b = gen([(2, 2)], torch.device("cpu"))[0]
    assert a.shape == (1, 4) and b.shape == (4, 4)
    torch.testing.assert_close(gen([(1, 1)], torch.device("cpu"))[0], torch.tensor([[0.0, 0.0, 8.0, 8.0]]))


def test_torchvision_layout_matches_torchvision_anchor_generator():
    """OFFSET 0 and ROUND give torchvision's RetinaNet anchors (its ratio is h/w, so its 0.5, 1, 2 order is od2's
    2, 1, 0.5), anchor for anchor, on a canvas whose sides are multiples of the coarsest stride."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512])
    reference = TorchvisionAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    feature_sizes = [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]  # a 256 x 384 canvas
    features = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
    expected = reference(ImageList(torch.zeros(1, 3, 256, 384), [(256, 384)]), features)[0]
    ours = AnchorGenerator([list(s) for s in sizes], [[2.0, 1.0, 0.5]], [8, 16, 32, 64, 128], offset=0.0,
                           round_cells=True)
    assert torch.equal(torch.cat(ours(feature_sizes, torch.device("cpu"))), expected)


def test_offset_and_rounding_follow_the_formula():
    gen = AnchorGenerator([[50.0]], [[2.0]], [16], offset=0.0, round_cells=True)
    # w = 50 * sqrt(2) = 70.71 -> corners -35.36 / 35.36 round to -35 / 35; h = 35.36 -> -17.68 / 17.68 -> -18 / 18
    expected = torch.tensor([[-35.0, -18.0, 35.0, 18.0], [16 - 35.0, -18.0, 16 + 35.0, 18.0]])
    assert torch.equal(gen([(1, 2)], torch.device("cpu"))[0], expected)
