"""Predictions of a dataset split drawn on its images (``od2 eval --vis``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from od2.data.image_io import read_image
from od2.data.records import DatasetInfo
from od2.utils.visualize import draw_detections, save_prediction_grid


def draw_dataset_predictions(info: DatasetInfo, detections_json: str | os.PathLike, out_path: str | os.PathLike,
                             num_images: int = 8, score_thresh: float = 0.3) -> Path:
    """Draw a results file's detections on the first ``num_images`` images of a dataset into one PNG grid.

    ``detections_json`` holds COCO results (original-image XYWH, dataset category ids).
    """
    label_of = {cat_id: label for label, cat_id in enumerate(info.category_ids)}
    by_image: dict[int, list[dict]] = {}
    for det in json.loads(Path(detections_json).read_text()):
        by_image.setdefault(det["image_id"], []).append(det)
    drawn = []
    for record in info.records[:num_images]:
        dets = by_image.get(record["image_id"], [])
        xywh = np.array([d["bbox"] for d in dets], dtype=np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        labels = np.array([label_of[d["category_id"]] for d in dets], dtype=np.int64)
        scores = np.array([d["score"] for d in dets], dtype=np.float32)
        drawn.append(draw_detections(read_image(record["file_name"]), boxes, labels, scores, info.class_names,
                                     score_thresh=score_thresh))
    save_prediction_grid(drawn, out_path)
    return Path(out_path)
