"""RetinaNet inference: top-k per level, score threshold, decode, class-wise NMS, batched over images.

Original-spec §3.9: per level keep the ``topk`` highest of the A*K sigmoid scores, drop those below
``score_thresh``, decode and clip to the image, concatenate levels, class-wise NMS at ``nms_thresh``,
keep the best ``max_detections``. All images of a batch go through one batched NMS call.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from .box_coder import BoxCoder


def detect(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
           image_sizes: torch.Tensor, box_coder: BoxCoder, *, score_thresh: float, topk: int,
           nms_thresh: float, max_detections: int) -> list[dict[str, torch.Tensor]]:
    """Detections per image.

    Args:
        logits: per level [B, N_l, K]; deltas: per level [B, N_l, 4]; anchors: per level [N_l, 4].
        image_sizes: int [B, 2] (h, w) of each image's content, for clipping.
    Returns:
        per image dict(boxes float [M, 4] XYXY, scores float [M], labels int64 [M]), M <= max_detections,
        sorted by decreasing score.
    """
    batch = image_sizes.shape[0]
    num_classes = logits[0].shape[-1]
    all_boxes, all_scores, all_labels, all_images = [], [], [], []
    for level_logits, level_deltas, level_anchors in zip(logits, deltas, anchors):
        # not sigmoid_(): for fp32 logits detach/flatten/float are views and would overwrite the caller's logits
        scores = level_logits.detach().flatten(1).float().sigmoid()  # [B, N_l * K]
        k = min(topk, scores.shape[1])
        top_scores, top_idx = scores.topk(k, dim=1)  # [B, k]
        keep = top_scores > score_thresh
        image_idx = torch.arange(batch, device=scores.device)[:, None].expand_as(top_idx)[keep]
        top_idx, top_scores = top_idx[keep], top_scores[keep]
        anchor_idx = torch.div(top_idx, num_classes, rounding_mode="floor")
        boxes = box_coder.decode(level_anchors[anchor_idx], level_deltas.detach()[image_idx, anchor_idx])
        all_boxes.append(boxes)
        all_scores.append(top_scores)
        all_labels.append(top_idx % num_classes)
        all_images.append(image_idx)
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    labels, images = torch.cat(all_labels), torch.cat(all_images)
    sizes = image_sizes.to(boxes.device, boxes.dtype)[images]  # [M, 2] (h, w)
    boxes = torch.stack([boxes[:, 0].clamp(min=0).minimum(sizes[:, 1]), boxes[:, 1].clamp(min=0).minimum(sizes[:, 0]),
                         boxes[:, 2].clamp(min=0).minimum(sizes[:, 1]), boxes[:, 3].clamp(min=0).minimum(sizes[:, 0])],
                        dim=1)
    keep = batched_nms(boxes, scores, images * num_classes + labels, nms_thresh)  # sorted by score
    images_kept = images[keep]
    results = []
    for i in range(batch):
        mine = keep[images_kept == i][:max_detections]
        results.append({"boxes": boxes[mine], "scores": scores[mine], "labels": labels[mine]})
    return results
