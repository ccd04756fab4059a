"""RetinaNet losses: sigmoid focal loss and the box regression losses, summed (callers normalise).

Box losses (``MODEL.RETINANET.BBOX_REG_LOSS_TYPE``): ``smooth_l1`` and ``l1`` act on encoded deltas;
``giou``, ``diou`` and ``ciou`` act on decoded boxes against the matched ground truth (torchvision.ops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss, sigmoid_focal_loss

BOX_LOSS_TYPES = ("smooth_l1", "l1", "giou", "diou", "ciou")
_IOU_LOSSES = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}


def focal_loss_sum(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Sum of the sigmoid focal loss (Lin et al. 2017) over all elements; logits/targets [N, K], fp32."""
    return sigmoid_focal_loss(logits.float(), targets, alpha=alpha, gamma=gamma, reduction="sum")


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
