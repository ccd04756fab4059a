"""Detections matched to ground truth image by image, for the confusion matrix and the F1 curves.

The rule (COCO's, at one IoU threshold, with ultralytics' class-agnostic option): detections are taken in descending
score order (ties in file order); each takes the not yet matched, non-crowd ground-truth box with the highest IoU
>= ``iou_thresh``, of its own class when ``class_aware``, of any class otherwise; one ground-truth box per detection
and one detection per box. A detection left unmatched that covers a crowd region (of its class when
``class_aware``) by ``iou_thresh`` of its own area is ignored, as COCO ignores it; any other is a false detection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNMATCHED = -1
IGNORED = -2  # the detection lies on a crowd region: neither right nor wrong


@dataclass
class ImageBoxes:
    """One image's boxes, XYXY float64 in original pixels; labels index the ground truth's sorted category ids."""

    gt_boxes: np.ndarray  # [G, 4]
    gt_labels: np.ndarray  # int64 [G]
    gt_crowd: np.ndarray  # bool [G]
    dt_boxes: np.ndarray  # [D, 4]
    dt_labels: np.ndarray  # int64 [D]
    dt_scores: np.ndarray  # float64 [D]


def _xywh_to_xyxy(boxes: list[list[float]]) -> np.ndarray:
    xywh = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def images_with_boxes(coco_gt: dict, detections: Sequence[dict]) -> list[ImageBoxes]:
    """Every image of ``coco_gt`` with its ground truth and its detections (COCO results: XYWH, category ids).

    Detections naming a category absent from the ground truth are left out (they count in no class, as in COCO AP).
    """
    label_of = {cat_id: label for label, cat_id in enumerate(sorted(int(c["id"]) for c in coco_gt["categories"]))}
    gts: dict[int, list[dict]] = {int(image["id"]): [] for image in coco_gt["images"]}
    dts: dict[int, list[dict]] = {image_id: [] for image_id in gts}
    for ann in coco_gt["annotations"]:
        if int(ann["category_id"]) in label_of:
            gts[int(ann["image_id"])].append(ann)
    for det in detections:
        if int(det["category_id"]) in label_of:
            dts[int(det["image_id"])].append(det)
    return [ImageBoxes(
        gt_boxes=_xywh_to_xyxy([a["bbox"] for a in gts[image_id]]),
        gt_labels=np.array([label_of[int(a["category_id"])] for a in gts[image_id]], dtype=np.int64),
        gt_crowd=np.array([bool(a.get("iscrowd", 0)) for a in gts[image_id]], dtype=bool),
        dt_boxes=_xywh_to_xyxy([d["bbox"] for d in dts[image_id]]),
        dt_labels=np.array([label_of[int(d["category_id"])] for d in dts[image_id]], dtype=np.int64),
        dt_scores=np.array([float(d["score"]) for d in dts[image_id]], dtype=np.float64),
    ) for image_id in gts]


def _intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas [N, M] of XYXY boxes a [N, 4] and b [M, 4] (empty boxes intersect nothing)."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def match_image(image: ImageBoxes, iou_thresh: float, class_aware: bool) -> np.ndarray:
    """The ground-truth index each detection matched, int64 [D]: UNMATCHED (-1) or IGNORED (-2) otherwise."""
    matches = np.full(len(image.dt_scores), UNMATCHED, dtype=np.int64)
    if not len(matches) or not len(image.gt_labels):
        return matches
    inter = _intersections(image.dt_boxes, image.gt_boxes)
    dt_areas = _areas(image.dt_boxes)
    union = dt_areas[:, None] + _areas(image.gt_boxes)[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    # COCO's overlap with a crowd region is the share of the detection it covers.
    ioa = np.divide(inter, dt_areas[:, None], out=np.zeros_like(inter), where=dt_areas[:, None] > 0)
    allowed = (image.dt_labels[:, None] == image.gt_labels[None, :]) if class_aware else np.ones_like(iou, bool)
    free = ~image.gt_crowd
    for d in np.argsort(-image.dt_scores, kind="stable"):
        candidates = np.where(free & allowed[d] & (iou[d] >= iou_thresh), iou[d], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= 0:
            matches[d] = best
            free[best] = False
        elif np.any(image.gt_crowd & allowed[d] & (ioa[d] >= iou_thresh)):
            matches[d] = IGNORED
    return matches
