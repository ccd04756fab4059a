"""Merging detections of several views of one image (test-time augmentation): class-wise NMS.

It takes the union of the views' detections in one coordinate frame: ``boxes`` float [M, 4] XYXY, ``scores`` [M],
``labels`` int64 [M], and return ``dict(boxes, scores, labels)`` sorted by decreasing score, at most
``max_detections``.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms


def nms_merge(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, *, iou_thresh: float,
              max_detections: int) -> dict[str, torch.Tensor]:
    """Class-wise NMS over the union: a detection is dropped when a higher-scored one of its class overlaps it
    with IoU above ``iou_thresh``. For views of the whole image (flips, test sizes), where duplicates have
    nearly the same box."""
    keep = batched_nms(boxes.float(), scores.float(), labels, iou_thresh)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
