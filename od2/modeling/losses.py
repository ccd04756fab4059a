"""RetinaNet losses: sigmoid focal loss and the box regression losses, summed (callers normalise).

Box losses (``MODEL.RETINANET.BBOX_REG_LOSS_TYPE``): ``smooth_l1`` and ``l1`` act on encoded deltas;
``giou``, ``diou`` and ``ciou`` act on decoded boxes against the matched ground truth (torchvision.ops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

BOX_LOSS_TYPES = ("smooth_l1", "l1", "giou", "diou", "ciou")
_IOU_LOSSES = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}


class _DenseFocalLossSum(torch.autograd.Function):
    """Sum of the sigmoid focal loss over the anchors ``valid`` marks, with one-hot targets given as the flat
    indices of their positive entries. Forward and backward are written out so that neither one-hot targets
    nor a masked copy of the logits is ever made, and the backward recomputes what it needs from the logits
    instead of keeping a chain of [B, A, K] intermediates.

    With p = sigmoid(x), a negative entry costs (1 - alpha) p^gamma softplus(x) and a positive one
    alpha (1 - p)^gamma softplus(-x) (= -log(1 - p) and -log(p)). The loss is the negative term over every
    valid entry plus, at the positive entries, the positive term minus the negative term counted there.
    """

    @staticmethod
    def forward(ctx, logits, valid, positive_index, alpha, gamma):
        x = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp16/bf16 -> fp32; fp64 stays
        neg_weight, pos_weight = (1 - alpha, alpha) if alpha >= 0 else (1.0, 1.0)
        negative = torch.sigmoid(x).pow_(gamma).mul_(F.softplus(x)).sum(-1)  # [B, A]
        total = neg_weight * (negative * valid.to(x.dtype)).sum()
        x_pos = x.flatten()[positive_index]
        p_pos = torch.sigmoid(x_pos)
        total = total + (pos_weight * (1 - p_pos).pow(gamma) * F.softplus(-x_pos)
                         - neg_weight * p_pos.pow(gamma) * F.softplus(x_pos)).sum()
        ctx.save_for_backward(logits, valid, positive_index)
        ctx.weights = (neg_weight, pos_weight, gamma)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        logits, valid, positive_index = ctx.saved_tensors
        neg_weight, pos_weight, gamma = ctx.weights
        x = logits.to(torch.promote_types(logits.dtype, torch.float32))
        p = torch.sigmoid(x)
        # d/dx p^g softplus(x) = p^g (g (1 - p) softplus(x) + p)
        grad = torch.rsub(p, 1).mul_(F.softplus(x)).mul_(gamma).add_(p).mul_(p.pow_(gamma))
        grad.mul_((neg_weight * grad_total) * valid.to(x.dtype).unsqueeze(-1))
        x_pos = x.flatten()[positive_index]
        p_pos, q_pos = torch.sigmoid(x_pos), torch.sigmoid(-x_pos)
        # d/dx (1 - p)^g softplus(-x) = -(1 - p)^g (g p softplus(-x) + 1 - p)
        d_pos = -q_pos.pow(gamma) * (gamma * p_pos * F.softplus(-x_pos) + q_pos)
        d_neg = p_pos.pow(gamma) * (gamma * q_pos * F.softplus(x_pos) + p_pos)
        grad.view(-1).index_add_(0, positive_index, (pos_weight * d_pos - neg_weight * d_neg) * grad_total)
        return grad.to(logits.dtype), None, None, None, None


def dense_focal_loss_sum(logits: torch.Tensor, valid: torch.Tensor, positive: torch.Tensor, labels: torch.Tensor,
                         alpha: float, gamma: float) -> torch.Tensor:
    """Sum of the sigmoid focal loss (Lin et al. 2017) of every anchor that ``valid`` marks, computed in fp32.

    Args:
        logits: [B, A, K] class logits; valid: bool [B, A], the anchors that count (positives and negatives,
            not the ignored ones); positive: bool [B, A]; labels: int64 [B, A], the class of each positive anchor
            (read only where ``positive``). The target of an anchor is one-hot at its label when positive,
            all zeros otherwise. ``alpha < 0`` weighs both terms 1, as torchvision's sigmoid_focal_loss.
    Returns:
        a float32 scalar, equal to ``torchvision.ops.sigmoid_focal_loss(logits[valid], targets[valid], alpha,
        gamma, reduction="sum")`` at a fraction of its time and memory.
    """
    num_classes = logits.shape[-1]
    positive_index = positive.flatten().nonzero().squeeze(1) * num_classes + labels.flatten()[positive.flatten()]
    return _DenseFocalLossSum.apply(logits, valid, positive_index, alpha, gamma)


def box_losses(loss_type: str, *, pred_deltas: torch.Tensor, target_deltas: torch.Tensor | None,
               pred_boxes: torch.Tensor | None, target_boxes: torch.Tensor | None,
               smooth_l1_beta: float = 1.0) -> torch.Tensor:
    """The box loss of each positive anchor, float32 [P].

    ``pred_deltas``/``target_deltas`` [P, 4] (encoded) for smooth_l1/l1, summed over the 4 coordinates;
    ``pred_boxes``/``target_boxes`` [P, 4] XYXY (decoded) for the IoU losses.
    """
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(pred_deltas.float(), target_deltas, beta=smooth_l1_beta, reduction="none").sum(-1)
    if loss_type == "l1":
        return F.l1_loss(pred_deltas.float(), target_deltas, reduction="none").sum(-1)
    if loss_type in _IOU_LOSSES:
        return _IOU_LOSSES[loss_type](pred_boxes.float(), target_boxes, reduction="none")
    raise ValueError(f"unknown MODEL.RETINANET.BBOX_REG_LOSS_TYPE {loss_type!r}; choose one of {BOX_LOSS_TYPES}")


def box_loss_sum(loss_type: str, **kwargs: torch.Tensor | float | None) -> torch.Tensor:
    """Sum of ``box_losses`` over positive anchors (a scalar; 0 when there are none)."""
    return box_losses(loss_type, **kwargs).sum()
