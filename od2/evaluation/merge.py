"""Merging detections of several views of one image (test-time augmentation, tiles): class-wise NMS or merging.

Both take the union of the views' detections in one coordinate frame: ``boxes`` float [M, 4] XYXY, ``scores`` [M],
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


PIECE_SIDE_TOL = 0.25  # a piece's uncut sides lie within this share of its width / height of its whole's sides


def greedy_ios_merge(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, *, ios_thresh: float,
                     max_detections: int, cut: torch.Tensor | None = None,
                     iou_thresh: float | None = None) -> dict[str, torch.Tensor]:
    """Greedy non-maximum merging by intersection over the smaller box (IoS), sahi's ``GREEDYNMM`` with ``IOS``,
    for tiles: in decreasing score order, a detection absorbs the remaining ones of its class whose IoS with it
    exceeds ``ios_thresh``, and its box becomes the union of theirs (its score stays the highest).

    Why not NMS by IoU: an object cut by a tile's edge is seen whole by the overlapping tile and as a part by the
    other; the part's IoU with the whole can be small (a duplicate survives NMS) while its IoS is near 1, and
    the part may score higher than the whole (NMS would keep the truncated box); the union restores the extent.

    ``cut`` (bool [M, 4]): which sides (x1, y1, x2, y2) of each box lie on an edge of its tile inside the image.
    Given, a pair is merged only where it looks like pieces of one object: the smaller box is cut, and on each side
    where neither is cut the two sides lie within ``PIECE_SIDE_TOL`` of the smaller box's width or height. Other
    pairs are duplicates only above ``iou_thresh`` (class-wise NMS: the lower-scored one dropped, the box kept).
    Why: a detector at a low score threshold (0.05 in evaluation) returns low-scored boxes around each object that
    overlap it mostly (IoS > 0.5, IoU below its NMS threshold), some cut by a tile edge; merging them into the
    object's box by union grows it past the object (on the digits demo, AP 42.6 on the whole image fell to 11.6
    through one tile covering it, and tiles of large canvases scored below the whole canvas). ``None``: every pair
    above ``ios_thresh`` merges (sahi's GREEDYNMM, sound for confident detections only: sahi itself switches to NMS
    below a 0.1 score threshold).
    """
    order = scores.argsort(descending=True)
    boxes, scores, labels = boxes[order].float(), scores[order], labels[order]
    cut = None if cut is None else cut[order]
    sizes = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).repeat(1, 2)  # [M, 4]: w, h, w, h
    areas = sizes[:, 0] * sizes[:, 1]
    alive = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    tiny = torch.finfo(torch.float32).tiny
    kept_boxes, kept = [], []
    for i in range(len(boxes)):  # O(kept * M) vector work and O(M) memory: tiles can give thousands of boxes
        if not alive[i]:
            continue
        top_left = torch.maximum(boxes[i, :2], boxes[:, :2])
        bottom_right = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
        ios = inter / torch.minimum(areas[i], areas).clamp(min=tiny)
        same = alive & (labels == labels[i])
        pieces = same & (ios > ios_thresh)
        duplicates = torch.zeros_like(same)
        if cut is not None:
            other_smaller = (areas < areas[i])[:, None]
            small_cut = torch.where(other_smaller, cut, cut[i])
            small_size = torch.where(other_smaller, sizes, sizes[i])
            sides_match = (boxes - boxes[i]).abs() <= PIECE_SIDE_TOL * small_size
            # an object wider than the overlap is seen as two pieces, cut on opposite sides
            pieces &= small_cut.any(dim=1) & (cut | cut[i] | sides_match).all(dim=1)
            duplicates = same & (inter / (areas[i] + areas - inter).clamp(min=tiny) > iou_thresh)
        pieces[i] = True
        group = boxes[pieces]
        kept_boxes.append(torch.cat([group[:, :2].min(dim=0).values, group[:, 2:].max(dim=0).values]))
        kept.append(i)
        alive &= ~(pieces | duplicates)
        if len(kept) == max_detections:
            break
    index = torch.tensor(kept, dtype=torch.long, device=boxes.device)
    merged = torch.stack(kept_boxes) if kept_boxes else boxes.new_zeros(0, 4)
    return {"boxes": merged, "scores": scores[index], "labels": labels[index]}
