"""Per-class COCO results: AP, AP50, AP75, APs/APm/APl of each category, with its ground-truth and detection counts.

The APs are derived from pycocotools' ``eval['precision']`` array as detectron2's ``_derive_coco_results`` does: the
mean of the precision entries > -1 of that category (maxDets=100), over all IoU thresholds for AP and the small /
medium / large area ranges, or at IoU 0.50 / 0.75 for AP50 / AP75. They equal what pycocotools' ``summarize()``
prints when ``params.catIds`` holds that category alone (tests/evaluation/test_per_class.py checks both).

A value is None (``null`` in JSON) where pycocotools has no number (its -1): the class has no ground truth
(crowd regions aside), or none in that area range. A class with ground truth but no detection scores 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

PER_CLASS_AP_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# (IoU threshold index or None for all of 0.50:0.95, area index) of each name, in the precision array's axes.
_AP_SLICES: dict[str, tuple[int | None, int]] = {
    "AP": (None, 0), "AP50": (0, 0), "AP75": (5, 0), "APs": (None, 1), "APm": (None, 2), "APl": (None, 3),
}
_MAX_DETS_100 = -1


def category_names(coco_gt: dict) -> dict[int, str]:
    """``{category id: name}`` of a COCO ground truth; a name used twice gets its id appended to stay a unique key."""
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco_gt["categories"]}
    counts = Counter(names.values())
    return {cat_id: name if counts[name] == 1 else f"{name} (id {cat_id})" for cat_id, name in names.items()}


def mean_valid_precision(precision: np.ndarray) -> float | None:
    """Mean of the entries > -1 of a slice of the precision array, None where there are none."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def per_class_results(precision: np.ndarray, category_ids: Sequence[int], coco_gt: dict,
                      detections: Sequence[dict]) -> dict[str, dict[str, float | int | None]]:
    """``{class name: {"AP", "AP50", "AP75", "APs", "APm", "APl", "num_gt", "num_dt"}}`` in category-id order.

    ``precision``: float [T=10, R=101, K, A=4, M=3], K ordered as ``category_ids`` (CocoSummary.precision).
    APs are fractions in [0, 1] or None (no ground truth to score); ``num_gt`` counts the class's non-crowd
    ground-truth boxes, ``num_dt`` its detections (all of them, whatever their score).
    """
    if precision.ndim != 5 or precision.shape[2] != len(category_ids):
        raise ValueError(f"precision array of shape {precision.shape} does not have {len(category_ids)} categories")
    names = category_names(coco_gt)
    num_gt = Counter(int(a["category_id"]) for a in coco_gt["annotations"] if not a.get("iscrowd", 0))
    num_dt = Counter(int(d["category_id"]) for d in detections)
    results = {}
    for k, cat_id in enumerate(category_ids):
        row: dict[str, float | int | None] = {}
        for name, (iou_index, area_index) in _AP_SLICES.items():
            by_iou = precision[:, :, k, area_index, _MAX_DETS_100]
            row[name] = mean_valid_precision(by_iou if iou_index is None else by_iou[iou_index])
        row["num_gt"], row["num_dt"] = num_gt[cat_id], num_dt[cat_id]
        results[names[cat_id]] = row
    return results


def format_per_class_table(per_class: dict[str, dict], extra: Sequence[str] = ()) -> str:
    """A fixed-width text table: one row per class, APs in percent (``-`` for None), counts, then ``extra`` keys."""
    columns = [*PER_CLASS_AP_NAMES, "num_gt", "num_dt", *extra]
    width = max([len("class"), *(len(name) for name in per_class)])
    widths = [max(len(column), 6) for column in columns]
    lines = [f"{'class':<{width}} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    for name, row in per_class.items():
        cells = [format_cell(column, row.get(column)) for column in columns]
        lines.append(f"{name:<{width}} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def format_cell(column: str, value: float | int | None) -> str:
    """One cell of the per-class table: APs in percent to 1 place, thresholds to 4, other floats to 3, None ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in PER_CLASS_AP_NAMES:
        return f"{100 * value:.1f}"
    if isinstance(value, float):  # thresholds to 4 places: od2 predict keeps scores >= the printed value
        return f"{value:.4f}" if column.endswith("thresh") else f"{value:.3f}"
    return str(value)
