"""Loss functions against hand-written formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from od2.modeling import losses
from od2.modeling.losses import BOX_LOSS_TYPES, box_loss_sum, dense_focal_loss_sum


def hand_focal(logits: list[list[float]], targets: list[list[float]], alpha: float, gamma: float) -> float:
    total = 0.0
    for row_x, row_t in zip(logits, targets):
        for x, t in zip(row_x, row_t):
            p = 1 / (1 + math.exp(-x))
            p_t = p if t == 1 else 1 - p
            alpha_t = alpha if t == 1 else 1 - alpha
            total += -alpha_t * (1 - p_t) ** gamma * math.log(p_t)
    return total


def dense_inputs(batch=2, anchors=7, classes=5, seed=0):
    """Logits [B, A, K] and a matching: valid [B, A] (one ignored anchor), positive [B, A], labels [B, A]."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, anchors, classes, generator=g) * 3
    labels = torch.randint(0, classes, (batch, anchors), generator=g)
    positive = torch.rand(batch, anchors, generator=g) < 0.4
    valid = torch.ones(batch, anchors, dtype=torch.bool)
    valid[0, 3] = positive[0, 3] = False  # ignored anchor (IoU between the thresholds)
    return logits, valid, positive, labels


def one_hot_targets(positive, labels, classes):
    return torch.nn.functional.one_hot(labels, classes).float() * positive[..., None]


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5), (-1.0, 2.0)])
def test_dense_focal_loss_matches_hand_formula_and_torchvision(alpha, gamma):
    logits, valid, positive, labels = dense_inputs()
    targets = one_hot_targets(positive, labels, 5)
    got = dense_focal_loss_sum(logits, valid, positive, labels, alpha, gamma)
    assert got.dim() == 0
    expected = sigmoid_focal_loss(logits[valid], targets[valid], alpha=alpha, gamma=gamma, reduction="sum")
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    if alpha >= 0:
        hand = hand_focal(logits[valid].tolist(), targets[valid].tolist(), alpha, gamma)
        assert got.item() == pytest.approx(hand, rel=1e-5)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)])
def test_dense_focal_loss_gradient_matches_autograd_of_torchvision(alpha, gamma):
    logits, valid, positive, labels = dense_inputs(seed=1)
    targets = one_hot_targets(positive, labels, 5)
    ours = logits.clone().requires_grad_()
    (2.5 * dense_focal_loss_sum(ours, valid, positive, labels, alpha, gamma)).backward()
    reference = logits.clone().requires_grad_()
    (2.5 * sigmoid_focal_loss(reference[valid], targets[valid], alpha=alpha, gamma=gamma, reduction="sum")).backward()
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-5, atol=1e-6)
    assert ours.grad[0, 3].abs().max() == 0  # the ignored anchor gets no gradient


@pytest.mark.parametrize("chunk_elements", [1, 12, 1 << 18])
def test_dense_focal_loss_chunks_give_the_same_loss_and_gradient(monkeypatch, chunk_elements):
    """The logits are processed in chunks of rows (one row per chunk at 1 element, several rows, one chunk):
    loss and gradient match torchvision's whatever the chunking, under no_grad as well."""
    monkeypatch.setitem(losses.FOCAL_CHUNK_ELEMENTS, "cpu", chunk_elements)
    logits, valid, positive, labels = dense_inputs(batch=3, anchors=11, classes=5, seed=4)
    targets = one_hot_targets(positive, labels, 5)
    ours = logits.clone().requires_grad_()
    got = dense_focal_loss_sum(ours, valid, positive, labels, 0.25, 2.0)
    got.backward()
    reference = logits.clone().requires_grad_()
    expected = sigmoid_focal_loss(reference[valid], targets[valid], alpha=0.25, gamma=2.0, reduction="sum")
    expected.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert dense_focal_loss_sum(ours, valid, positive, labels, 0.25, 2.0).item() == got.item()


def test_dense_focal_loss_gradcheck_in_double():
    logits, valid, positive, labels = dense_inputs(batch=1, anchors=4, classes=3, seed=2)
    x = logits.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: dense_focal_loss_sum(t, valid, positive, labels, 0.25, 2.0),
                                    (x,), eps=1e-6, atol=1e-4)


def test_dense_focal_loss_half_logits_computed_in_fp32_with_half_gradient():
    logits, valid, positive, labels = dense_inputs(seed=3)
    half = logits.half().requires_grad_()
    got = dense_focal_loss_sum(half, valid, positive, labels, 0.25, 2.0)
    assert got.dtype == torch.float32
    expected = dense_focal_loss_sum(half.detach().float(), valid, positive, labels, 0.25, 2.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    got.backward()
    assert half.grad.dtype == torch.float16


def test_dense_focal_loss_half_gradient_keeps_small_entries_under_a_loss_scale():
    """With fp16 logits and a GradScaler-like upstream factor, entries of the derivative below fp16's range
    (about 1e-8 here) reach the gradient scaled, as torchvision's loss on fp32 logits gives them."""
    logits, valid, positive, labels = dense_inputs(seed=5)
    logits = torch.full_like(logits, -6.4).half().float()  # p = 1.7e-3: negatives' derivative about 1e-8
    scale = 2.0 ** 16
    half = logits.half().requires_grad_()
    (scale * dense_focal_loss_sum(half, valid, positive, labels, 0.25, 2.0)).backward()
    reference = logits.clone().requires_grad_()
    targets = one_hot_targets(positive, labels, 5)
    (scale * sigmoid_focal_loss(reference[valid], targets[valid], alpha=0.25, gamma=2.0, reduction="sum")).backward()
    negatives = valid[..., None] & (targets == 0)
    assert reference.grad[negatives].abs().max() < 6e-8 * scale  # below fp16's smallest value before scaling
    torch.testing.assert_close(half.grad.float()[negatives], reference.grad[negatives], rtol=2e-3, atol=0)


def test_dense_focal_loss_without_anchors_is_zero():
    empty = torch.zeros(2, 0, 3, requires_grad=True)
    none = torch.zeros(2, 0, dtype=torch.bool)
    got = dense_focal_loss_sum(empty, none, none, torch.zeros(2, 0, dtype=torch.long), 0.25, 2.0)
    got.backward()
    assert got.item() == 0.0 and empty.grad.shape == (2, 0, 3)


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
