"""IoU matching of anchors to ground-truth boxes, vectorised over the batch (original-spec §3.6).

Each anchor takes the ground truth it overlaps most. It is positive when that IoU >= the high threshold,
negative below the low threshold, ignored in between. With low-quality matches, for every ground-truth
box the anchors with its highest IoU (ties included, as detectron2) become positive too, matched to their
own best ground truth, so that no ground truth is left without an anchor.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


def pad_boxes(boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Stack ragged per-image targets.

    Returns boxes float [B, G, 4], labels int64 [B, G] and a bool mask [B, G] of real (non-padding)
    entries, G = the most boxes any image has (at least 1).
    """
    batch = len(boxes)
    most = max([len(b) for b in boxes] + [1])
    device = boxes[0].device if batch else torch.device("cpu")
    padded = torch.zeros(batch, most, 4, device=device)
    padded_labels = torch.zeros(batch, most, dtype=torch.int64, device=device)
    valid = torch.zeros(batch, most, dtype=torch.bool, device=device)
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        padded[i, : len(b)] = b
        padded_labels[i, : len(b)] = lab
        valid[i, : len(b)] = True
    return padded, padded_labels, valid


def batched_box_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of boxes [B, G, 4] with anchors [A, 4] -> [B, G, A] (torchvision's box_iou on the flat batch)."""
    batch, most = boxes.shape[:2]
    return box_iou(boxes.reshape(-1, 4), anchors).reshape(batch, most, -1)


class Matcher:
    """Assign every anchor a match state and a ground-truth index, for a whole batch at once.

    Args:
        thresholds: (low, high), e.g. (0.4, 0.5).
        allow_low_quality_matches: make each ground truth's best anchors positive.
    """

    def __init__(self, thresholds: tuple[float, float] = (0.4, 0.5), allow_low_quality_matches: bool = True):
        low, high = thresholds
        if not 0 <= low <= high <= 1:
            raise ValueError(f"IOU_THRESHOLDS must be 0 <= low <= high <= 1, got {thresholds}")
        self.low, self.high = low, high
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Match from an IoU matrix.

        Args:
            iou: float [B, G, A], IoU of each ground truth with each anchor.
            valid: bool [B, G], False for padding entries.
        Returns:
            matched_idx int64 [B, A], index of the anchor's ground truth (meaningful where positive);
            state int8 [B, A], POSITIVE / NEGATIVE / IGNORE.
        """
        iou = iou.masked_fill(~valid[..., None], -1.0)
        best_iou, matched_idx = iou.max(dim=1)
        state = torch.full_like(matched_idx, IGNORE, dtype=torch.int8)
        state[best_iou < self.low] = NEGATIVE
        state[best_iou >= self.high] = POSITIVE
        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=2, keepdim=True).values  # [B, G, 1]
            is_best = (iou == best_per_gt) & valid[..., None] & (best_per_gt > 0)
            state[is_best.any(dim=1)] = POSITIVE
        return matched_idx, state
