"""Loss functions against hand-written formulas."""

from __future__ import annotations

import math

import pytest
import torch

from od2.modeling.losses import BOX_LOSS_TYPES, box_loss_sum, focal_loss_sum


def hand_focal(logits: list[list[float]], targets: list[list[float]], alpha: float, gamma: float) -> float:
    total = 0.0
    for row_x, row_t in zip(logits, targets):
        for x, t in zip(row_x, row_t):
            p = 1 / (1 + math.exp(-x))
            p_t = p if t == 1 else 1 - p
            alpha_t = alpha if t == 1 else 1 - alpha
            total += -alpha_t * (1 - p_t) ** gamma * math.log(p_t)
    return total


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)])
def test_focal_loss_sum(alpha, gamma):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g) * 3
    targets = torch.zeros(7, 5)
    targets[torch.arange(7), torch.randint(0, 5, (7,), generator=g)] = 1
    targets[3] = 0  # a background anchor
    got = focal_loss_sum(logits, targets, alpha, gamma)
    assert got.dim() == 0
    assert got.item() == pytest.approx(hand_focal(logits.tolist(), targets.tolist(), alpha, gamma), rel=1e-5)


def test_focal_loss_half_logits_computed_in_fp32():
    logits = torch.tensor([[2.0, -3.0]], dtype=torch.float16)
    targets = torch.tensor([[1.0, 0.0]])
    got = focal_loss_sum(logits, targets, 0.25, 2.0)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(hand_focal([[2.0, -3.0]], [[1.0, 0.0]], 0.25, 2.0), rel=1e-4)


def test_focal_loss_empty_is_zero():
    got = focal_loss_sum(torch.zeros(0, 3), torch.zeros(0, 3), 0.25, 2.0)
    assert got.item() == 0.0


PRED = [[0.5, -1.2, 0.05, 2.0], [0.0, 0.3, -0.7, 0.9]]
TARGET = [[0.2, -0.1, 0.0, 0.4], [1.5, 0.3, -0.75, -0.6]]


def huber(x: float, delta: float) -> float:
    return 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)


def smooth_l1(x: float, beta: float) -> float:
    return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta


def deltas_loss(kind: str, beta: float = 1.0):
    return box_loss_sum(kind, pred_deltas=torch.tensor(PRED), target_deltas=torch.tensor(TARGET),
                        pred_boxes=None, target_boxes=None, smooth_l1_beta=beta).item()


def test_smooth_l1_beta_one_is_huber_delta_one():
    expected = sum(huber(p - t, 1.0) for rp, rt in zip(PRED, TARGET) for p, t in zip(rp, rt))
    assert deltas_loss("smooth_l1", 1.0) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_smooth_l1_other_beta(beta):
    expected = sum(smooth_l1(p - t, beta) for rp, rt in zip(PRED, TARGET) for p, t in zip(rp, rt))
    assert deltas_loss("smooth_l1", beta) == pytest.approx(expected, rel=1e-6)


def test_l1():
    expected = sum(abs(p - t) for rp, rt in zip(PRED, TARGET) for p, t in zip(rp, rt))
    assert deltas_loss("l1") == pytest.approx(expected, rel=1e-6)


# -------------------------------------------------------------- IoU-family losses

BOXES_P = [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0], [0.0, 0.0, 4.0, 4.0], [2.0, 3.0, 8.0, 9.0]]
BOXES_T = [[5.0, 5.0, 15.0, 15.0], [5.0, 5.0, 15.0, 25.0], [10.0, 10.0, 12.0, 20.0], [1.0, 1.0, 9.0, 7.0]]


def parts(p, t):
    area_p = (p[2] - p[0]) * (p[3] - p[1])
    area_t = (t[2] - t[0]) * (t[3] - t[1])
    iw = max(0.0, min(p[2], t[2]) - max(p[0], t[0]))
    ih = max(0.0, min(p[3], t[3]) - max(p[1], t[1]))
    inter = iw * ih
    union = area_p + area_t - inter
    cw = max(p[2], t[2]) - min(p[0], t[0])
    ch = max(p[3], t[3]) - min(p[1], t[1])
    return inter / union, union, cw, ch


def hand_giou_loss(p, t):
    iou, union, cw, ch = parts(p, t)
    c = cw * ch
    return 1 - (iou - (c - union) / c)


def centre_term(p, t):
    _, _, cw, ch = parts(p, t)
    dx = (p[0] + p[2]) / 2 - (t[0] + t[2]) / 2
    dy = (p[1] + p[3]) / 2 - (t[1] + t[3]) / 2
    return (dx * dx + dy * dy) / (cw * cw + ch * ch)


def hand_diou_loss(p, t):
    return 1 - parts(p, t)[0] + centre_term(p, t)


def hand_ciou_loss(p, t):
    iou = parts(p, t)[0]
    v = 4 / math.pi ** 2 * (math.atan((t[2] - t[0]) / (t[3] - t[1])) - math.atan((p[2] - p[0]) / (p[3] - p[1]))) ** 2
    alpha = v / (1 - iou + v) if v > 0 else 0.0
    return 1 - iou + centre_term(p, t) + alpha * v


@pytest.mark.parametrize("kind,formula", [("giou", hand_giou_loss), ("diou", hand_diou_loss),
                                          ("ciou", hand_ciou_loss)])
def test_iou_losses(kind, formula):
    expected = sum(formula(p, t) for p, t in zip(BOXES_P, BOXES_T))
    got = box_loss_sum(kind, pred_deltas=torch.zeros(4, 4), target_deltas=None,
                       pred_boxes=torch.tensor(BOXES_P), target_boxes=torch.tensor(BOXES_T))
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_giou_identical_boxes_is_zero_and_disjoint_exceeds_one():
    same = box_loss_sum("giou", pred_deltas=None, target_deltas=None,
                        pred_boxes=torch.tensor([BOXES_P[1]]), target_boxes=torch.tensor([BOXES_P[1]]))
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    apart = box_loss_sum("giou", pred_deltas=None, target_deltas=None,
                         pred_boxes=torch.tensor([BOXES_P[2]]), target_boxes=torch.tensor([BOXES_T[2]]))
    assert 1.0 < apart.item() < 2.0


@pytest.mark.parametrize("kind", BOX_LOSS_TYPES)
def test_empty_inputs_give_zero(kind):
    empty = torch.zeros(0, 4)
    got = box_loss_sum(kind, pred_deltas=empty, target_deltas=empty, pred_boxes=empty, target_boxes=empty)
    assert got.item() == 0.0


def test_unknown_type():
    with pytest.raises(ValueError, match="BBOX_REG_LOSS_TYPE"):
        box_loss_sum("iou_huber", pred_deltas=torch.zeros(1, 4), target_deltas=torch.zeros(1, 4),
                     pred_boxes=None, target_boxes=None)
