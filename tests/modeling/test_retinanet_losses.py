"""RetinaNet meta-architecture: losses against an independent reference, gradients, inference limits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou, clip_boxes_to_image, generalized_box_iou_loss

from od2.modeling.anchors import AnchorGenerator
from od2.modeling.box_coder import BoxCoder
from od2.modeling.matcher import Matcher
from od2.modeling.necks.fpn import FPN
from od2.modeling.retinanet import RetinaNet
from od2.modeling.retinanet_head import RetinaNetHead

K = 3
H, W = 64, 96  # padded batch size


class TinyBackbone(nn.Module):
    """C3 (s8), C4 (s16), C5 (s32) from strided convs."""

    def __init__(self):
        super().__init__()
        self.c3 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                                nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())
        self.c5 = nn.Sequential(nn.Conv2d(12, 16, 3, 2, 1), nn.ReLU())
        self.out_channels = {"C3": 8, "C4": 12, "C5": 16}
        self.strides = {"C3": 8, "C4": 16, "C5": 32}
        self.pixel_mean = [120.0, 115.0, 100.0]
        self.pixel_std = [60.0, 60.0, 60.0]

    def forward(self, x):
        c3 = self.c3(x)
        c4 = self.c4(c3)
        return {"C3": c3, "C4": c4, "C5": self.c5(c4)}


def build(box_loss_type: str = "smooth_l1", head_norm: str = "GN") -> RetinaNet:
    torch.manual_seed(0)
    backbone = TinyBackbone()
    neck = FPN(backbone.out_channels, out_channels=16, norm="")
    in_features = ["P3", "P4", "P5", "P6", "P7"]
    sizes = [[16 * 2 ** lvl * 2 ** (k / 3) for k in range(3)] for lvl in range(5)]
    anchors = AnchorGenerator(sizes, [[0.5, 1.0, 2.0]], [neck.strides[f] for f in in_features])
    head = RetinaNetHead(16, anchors.num_anchors, K, len(in_features), num_convs=2, norm=head_norm)
    return RetinaNet(backbone, neck, head, in_features, anchors, BoxCoder(), Matcher((0.4, 0.5), True),
                     backbone.pixel_mean, backbone.pixel_std, box_loss_type=box_loss_type)


def batch(with_boxes=(True, False, True)):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (len(with_boxes), 3, H, W), generator=g, dtype=torch.uint8)
    image_sizes = torch.tensor([[64, 90], [50, 96], [64, 70]])[: len(with_boxes)]
    all_boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0], [40.0, 10.0, 88.0, 60.0]]),
                 torch.tensor([[10.0, 10.0, 20.0, 20.0]]),
                 torch.tensor([[0.0, 0.0, 64.0, 64.0], [30.0, 20.0, 50.0, 30.0], [31.0, 21.0, 52.0, 31.0]])]
    all_labels = [torch.tensor([0, 2]), torch.tensor([1]), torch.tensor([1, 0, 2])]
    boxes = [b if keep else torch.zeros(0, 4) for b, keep in zip(all_boxes, with_boxes)]
    labels = [lab if keep else torch.zeros(0, dtype=torch.int64) for lab, keep in zip(all_labels, with_boxes)]
    return images, image_sizes, {"boxes": boxes, "labels": labels}


def reference_losses(model: RetinaNet, images, targets, alpha=0.25, gamma=2.0):
    """Unnormalised focal / smooth-L1 sums and the positive count, via torchvision's matcher and coder."""
    with torch.no_grad():
        logits, deltas, anchors = model.raw_outputs(model.normalize(images))
    logits, deltas, anchors = torch.cat(logits, 1).double(), torch.cat(deltas, 1).double(), torch.cat(anchors)
    tv_matcher, tv_coder = TVMatcher(0.5, 0.4, allow_low_quality_matches=True), TVBoxCoder((1.0, 1.0, 1.0, 1.0))
    cls_sum = box_sum = 0.0
    num_pos = 0
    for i, (gt, lab) in enumerate(zip(targets["boxes"], targets["labels"])):
        if len(gt):
            matches = tv_matcher(box_iou(gt, anchors))
        else:
            matches = torch.full((len(anchors),), -1)
        pos = matches >= 0
        valid = pos | (matches == -1)
        num_pos += int(pos.sum())
        t = torch.zeros(len(anchors), K, dtype=torch.float64)
        if pos.any():
            t[pos, lab[matches[pos]]] = 1.0
        p = torch.sigmoid(logits[i][valid])
        t = t[valid]
        p_t = p * t + (1 - p) * (1 - t)
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        cls_sum += (-alpha_t * (1 - p_t) ** gamma * torch.log(p_t)).sum().item()
        if pos.any():
            target = tv_coder.encode_single(gt[matches[pos]].double(), anchors[pos].double())
            diff = (deltas[i][pos] - target).abs()
            box_sum += torch.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).sum().item()
    return cls_sum, box_sum, num_pos


def test_losses_match_reference_and_normaliser():
    model = build()
    images, image_sizes, targets = batch()
    losses = model(images, image_sizes, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    cls_sum, box_sum, num_pos = reference_losses(model, images, targets)
    assert num_pos > 3  # several positives, from more than one image
    assert losses["loss_cls"].item() == pytest.approx(cls_sum / num_pos, rel=1e-4)
    assert losses["loss_box_reg"].item() == pytest.approx(box_sum / num_pos, rel=1e-4)


def test_finite_with_an_image_without_boxes():
    model = build()
    images, image_sizes, targets = batch((True, False, True))
    assert len(targets["boxes"][1]) == 0
    losses = model(images, image_sizes, targets)
    for value in losses.values():
        assert value.dim() == 0 and torch.isfinite(value)
    assert losses["loss_box_reg"].item() > 0


def test_batch_without_any_boxes():
    model = build()
    images, image_sizes, targets = batch((False, False, False))
    losses = model(images, image_sizes, targets)
    assert losses["loss_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"].item() > 0
    cls_sum, _, num_pos = reference_losses(model, images, targets)
    assert num_pos == 0
    assert losses["loss_cls"].item() == pytest.approx(cls_sum, rel=1e-4)  # normaliser floored at 1
    sum(losses.values()).backward()  # still differentiable
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("head_norm", ["", "GN", "EvoNormS0", "SN", "SwitchNorm"])
def test_gradients_reach_all_parameters(head_norm):
    model = build(head_norm=head_norm)
    images, image_sizes, targets = batch()
    losses = model(images, image_sizes, targets)
    sum(losses.values()).backward()
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert len(params) > 20
    unreached = [name for name, p in params if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not unreached, unreached
    zero = [name for name, p in params if p.grad.abs().sum() == 0]
    if head_norm == "":
        assert not zero, zero
    else:
        # GN on 16 channels has 1 channel per group: on the 1x1 P7 map its output is the constant beta, so P7's
        # conv and GN gamma get exactly zero gradient; a level without positives gives zero to its box-tower GN.
        assert all(name.startswith(("neck.extra.1.", "head.cls_tower.norm_acts.", "head.box_tower.norm_acts."))
                   for name in zero), zero
        assert not [name for name in zero if name.startswith(("backbone.", "head.cls_score", "head.bbox_pred"))]


@pytest.mark.parametrize("loss_type", ["giou", "diou", "ciou", "l1"])
def test_other_box_losses_finite(loss_type):
    model = build(loss_type)
    images, image_sizes, targets = batch()
    losses = model(images, image_sizes, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"].item() > 0
    sum(losses.values()).backward()


def test_giou_loss_value():
    model = build("giou")
    images, image_sizes, targets = batch()
    losses = model(images, image_sizes, targets)
    with torch.no_grad():
        logits, deltas, anchors = model.raw_outputs(model.normalize(images))
    deltas, anchors = torch.cat(deltas, 1), torch.cat(anchors)
    tv_matcher, tv_coder = TVMatcher(0.5, 0.4, allow_low_quality_matches=True), TVBoxCoder((1.0, 1.0, 1.0, 1.0))
    total, num_pos = 0.0, 0
    for i, gt in enumerate(targets["boxes"]):
        if not len(gt):
            continue
        matches = tv_matcher(box_iou(gt, anchors))
        pos = matches >= 0
        num_pos += int(pos.sum())
        pred = tv_coder.decode_single(deltas[i][pos], anchors[pos])
        height, width = image_sizes[i].tolist()
        pred = clip_boxes_to_image(pred, (height, width))  # original-spec §5: decoded boxes clipped to the image
        total += generalized_box_iou_loss(pred, gt[matches[pos]], reduction="sum").item()
    assert losses["loss_box_reg"].item() == pytest.approx(total / num_pos, rel=1e-4)


def test_iou_loss_boxes_clipped_to_their_image_without_gradient_where_clipped():
    positive = torch.tensor([[True, False, True], [False, True, False]])  # 2 images, 3 anchors
    image_sizes = torch.tensor([[50, 80], [30, 40]])  # (h, w)
    boxes = torch.tensor([[-5.0, 10, 90, 40], [10, 5, 20, 49], [30, -2, 60, 35]], requires_grad=True)
    clipped = RetinaNet.clip_to_images(boxes, image_sizes, positive)
    expected = torch.tensor([[0.0, 10, 80, 40], [10, 5, 20, 49], [30, 0, 40, 30]])
    torch.testing.assert_close(clipped, expected)
    clipped.sum().backward()
    torch.testing.assert_close(boxes.grad, (boxes.detach() == expected).float())


def test_inference_limits():
    model = build().eval()
    model.score_thresh = 0.0  # every candidate passes, so the 100 cap binds
    images, image_sizes, _ = batch()
    with torch.no_grad():
        results = model(images, image_sizes)
    assert len(results) == 3
    for det, (h, w) in zip(results, image_sizes.tolist()):
        assert len(det["boxes"]) == len(det["scores"]) == len(det["labels"]) == 100
        b = det["boxes"]
        assert b.shape == (100, 4) and (b >= 0).all()
        assert (b[:, [0, 2]] <= w).all() and (b[:, [1, 3]] <= h).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert ((det["labels"] >= 0) & (det["labels"] < K)).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
    model.score_thresh = 0.05  # default: a fresh model's scores sit near the 0.01 prior
    with torch.no_grad():
        for det in model(images, image_sizes):
            assert len(det["boxes"]) <= 100


def test_prior_probability_at_init():
    model = build().eval()
    images, _, _ = batch()
    with torch.no_grad():
        logits, _, _ = model.raw_outputs(model.normalize(images))
    mean = torch.sigmoid(torch.cat(logits, 1)).mean().item()
    assert math.isclose(mean, 0.01, rel_tol=0.2)
