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


# Elements of the logits handled per pass of the dense focal loss: on CPU a chunk's intermediates stay in cache
# (1 MiB per fp32 tensor) and no [B, A, K] temporary is ever allocated; on GPUs chunks only bound the memory.
FOCAL_CHUNK_ELEMENTS = {"cpu": 1 << 18, "default": 1 << 24}


def _focal_chunk_rows(device: torch.device, num_classes: int) -> int:
    elements = FOCAL_CHUNK_ELEMENTS.get(device.type, FOCAL_CHUNK_ELEMENTS["default"])
    return max(1, elements // max(num_classes, 1))


class _DenseFocalLossSum(torch.autograd.Function):
    """Sum of the sigmoid focal loss over the anchors ``valid`` marks, with one-hot targets given as the flat
    indices of their positive entries. Neither one-hot targets nor a masked copy of the logits is ever made.

    With p = sigmoid(x), a negative entry costs (1 - alpha) p^gamma softplus(x) and a positive one
    alpha (1 - p)^gamma softplus(-x) (= -log(1 - p) and -log(p)). The loss is the negative term over every
    valid entry plus, at the positive entries, the positive term minus the negative term counted there.

    The output is a scalar, so its gradient is the upstream scalar times d(loss)/d(logits). The forward computes
    that derivative in the same pass as the loss, chunk by chunk (sigmoid and softplus once per element), and
    keeps it in place of the logits: the backward is one multiplication. The derivative is kept in fp32 for fp16
    logits too: unscaled, its small entries would underflow in fp16 before a GradScaler's factor reached them.
    """

    @staticmethod
    def forward(ctx, logits, valid, positive_index, alpha, gamma, with_grad):
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)  # fp16/bf16 -> fp32; fp64 stays
        neg_weight, pos_weight = (1 - alpha, alpha) if alpha >= 0 else (1.0, 1.0)
        num_classes = logits.shape[-1]
        rows = logits.reshape(-1, num_classes)  # [B * A, K]
        row_weights = valid.reshape(-1, 1).to(compute_dtype) * neg_weight  # [B * A, 1]
        grad = torch.empty(rows.shape, dtype=compute_dtype, device=logits.device) if with_grad else None
        total = torch.zeros((), dtype=compute_dtype, device=logits.device)
        step = _focal_chunk_rows(logits.device, num_classes)
        for start in range(0, rows.shape[0], step):
            x = rows[start:start + step].to(compute_dtype)
            weights = row_weights[start:start + step]
            p = torch.sigmoid(x)
            softplus = F.softplus(x)
            p_gamma = p.pow(gamma)
            total += (p_gamma * softplus).sum(-1, keepdim=True).mul_(weights).sum()
            if with_grad:
                # d/dx p^g softplus(x) = p^g (g (1 - p) softplus(x) + p), written straight into the gradient
                chunk_grad = grad[start:start + step]
                torch.sub(1, p, out=chunk_grad).mul_(softplus).mul_(gamma).add_(p).mul_(p_gamma).mul_(weights)
        x_pos = logits.reshape(-1)[positive_index].to(compute_dtype)
        p_pos, q_pos = torch.sigmoid(x_pos), torch.sigmoid(-x_pos)
        softplus_pos, softplus_neg = F.softplus(-x_pos), F.softplus(x_pos)
        total = total + (pos_weight * q_pos.pow(gamma) * softplus_pos
                         - neg_weight * p_pos.pow(gamma) * softplus_neg).sum()
        if with_grad:
            # d/dx (1 - p)^g softplus(-x) = -(1 - p)^g (g p softplus(-x) + 1 - p)
            d_pos = -q_pos.pow(gamma) * (gamma * p_pos * softplus_pos + q_pos)
            d_neg = p_pos.pow(gamma) * (gamma * q_pos * softplus_neg + p_pos)
            grad.view(-1).index_add_(0, positive_index, pos_weight * d_pos - neg_weight * d_neg)
            ctx.save_for_backward(grad.view(logits.shape))
            ctx.logits_dtype = logits.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return (grad * grad_total).to(ctx.logits_dtype), None, None, None, None, None


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
    # Under no_grad the derivative is not computed (autograd.Function.forward cannot tell grad mode itself).
    with_grad = torch.is_grad_enabled() and logits.requires_grad
    return _DenseFocalLossSum.apply(logits, valid, positive_index, alpha, gamma, with_grad)


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
