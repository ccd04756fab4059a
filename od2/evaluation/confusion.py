"""Confusion matrix of a detector at one IoU and one score threshold, with a background row and column.

Detections with score >= ``score_thresh`` are matched to the ground truth class-agnostically (as ultralytics does;
the rule is in :mod:`od2.evaluation.matching`), so a box found with the wrong class shows up off the diagonal:

- ``matrix[true class, detected class]`` counts matched pairs (the diagonal: right class);
- ``matrix[true class, background]`` counts ground-truth boxes no detection matched (missed);
- ``matrix[background, detected class]`` counts detections that matched no object (false detections);
- detections lying on crowd regions and crowd regions themselves count nowhere.

Rows are ground truth and columns detections (the scikit-learn convention), the background last in both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from od2.utils.atomic_write import atomic_write

from .matching import UNMATCHED, ImageBoxes, match_image

BACKGROUND = "background"


def confusion_matrix(images: Sequence[ImageBoxes], num_classes: int, score_thresh: float,
                     iou_thresh: float = 0.5) -> np.ndarray:
    """int64 [K + 1, K + 1]: rows ground-truth class, columns detected class, index K the background."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    background = num_classes
    for image in images:
        kept = image.dt_scores >= score_thresh
        kept_image = ImageBoxes(image.gt_boxes, image.gt_labels, image.gt_crowd, image.dt_boxes[kept],
                                image.dt_labels[kept], image.dt_scores[kept])
        matches = match_image(kept_image, iou_thresh, class_aware=False)
        matched = matches >= 0
        np.add.at(matrix, (image.gt_labels[matches[matched]], kept_image.dt_labels[matched]), 1)
        np.add.at(matrix[background], kept_image.dt_labels[matches == UNMATCHED], 1)
        found = np.zeros(len(image.gt_labels), dtype=bool)
        found[matches[matched]] = True
        np.add.at(matrix[:, background], image.gt_labels[~found & ~image.gt_crowd], 1)
    return matrix


def write_confusion_json(matrix: np.ndarray, class_names: Sequence[str], score_thresh: float, iou_thresh: float,
                         path: str | os.PathLike) -> Path:
    """Write ``{"classes": [..., "background"], "rows": "ground truth", "columns": "detections", "score_thresh",
    "iou_thresh", "matrix": [[int]]}`` to ``path`` atomically."""
    payload = {"classes": [*class_names, BACKGROUND], "rows": "ground truth", "columns": "detections",
               "score_thresh": score_thresh, "iou_thresh": iou_thresh, "matrix": matrix.tolist()}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return Path(path)
