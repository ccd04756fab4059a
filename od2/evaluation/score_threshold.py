"""F1 against score threshold, per class and overall, and the threshold that maximises it.

Detections are matched to the ground truth of their class at IoU 0.5 (the rule of :mod:`od2.evaluation.matching`;
all detections, not only the first 100 per image). Keeping the detections with score >= t gives TP(t) and FP(t);
FN(t) is the class's non-crowd ground truth left unmatched, and F1(t) = 2 TP / (2 TP + FP + FN). Thresholds are
the detections' own scores, so the best threshold is exactly the ``--score-thresh`` to give ``od2 predict``
(which keeps score >= threshold). "Overall" pools the detections and objects of every class (micro average): the
one threshold for a model that uses a single one. Among equal F1s the lowest threshold wins (more recall).

TP and FP at every threshold equal those of pycocotools' own matching (``evalImgs`` at IoU 0.5, area all) when no
image has more than 100 detections of a class (tests/evaluation/test_confusion_and_f1.py). faster-coco-eval's
``extended_metrics`` is not used for this: it counts a detection matched to a crowd region as a true positive
(pycocotools ignores it) and gives one macro-averaged threshold, not each class's curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .matching import IGNORED, ImageBoxes, match_image


@dataclass
class F1Curve:
    """Precision, recall and F1 when keeping the detections scoring >= each threshold (all arrays [N]).

    ``thresholds`` are the distinct detection scores, descending; empty when there is no detection.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    num_gt: int

    def best(self) -> dict[str, float | None]:
        """``{"score_thresh", "f1", "precision", "recall"}`` at the highest F1 (lowest threshold among ties);
        score_thresh None and the rest 0 when no threshold gives a true positive."""
        if not len(self.f1) or self.f1.max() <= 0:
            return {"score_thresh": None, "f1": 0.0, "precision": 0.0, "recall": 0.0}
        index = len(self.f1) - 1 - int(np.argmax(self.f1[::-1]))  # thresholds descend: the last maximum
        return {"score_thresh": float(self.thresholds[index]), "f1": float(self.f1[index]),
                "precision": float(self.precision[index]), "recall": float(self.recall[index])}


def f1_curve(scores: np.ndarray, is_true_positive: np.ndarray, num_gt: int) -> F1Curve:
    """The curve of detections with ``scores`` [D] and their outcome ``is_true_positive`` bool [D] against
    ``num_gt`` objects to find."""
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], is_true_positive[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    last_of_each_score = np.flatnonzero(np.append(scores[1:] != scores[:-1], len(scores) > 0))
    tp, fp = tp[last_of_each_score].astype(np.float64), fp[last_of_each_score].astype(np.float64)
    return F1Curve(thresholds=scores[last_of_each_score], precision=tp / np.maximum(tp + fp, 1),
                   recall=tp / num_gt if num_gt else np.zeros_like(tp),
                   f1=2 * tp / np.maximum(2 * tp + fp + (num_gt - tp), 1), num_gt=num_gt)


def f1_curves(images: Sequence[ImageBoxes], num_classes: int,
              iou_thresh: float = 0.5) -> tuple[list[F1Curve], F1Curve]:
    """The F1 curve of each class (index = sorted category id order of ``images``' labels) and the overall one."""
    scores, labels, hits = [], [], []
    num_gt = np.zeros(num_classes, dtype=np.int64)
    for image in images:
        matches = match_image(image, iou_thresh, class_aware=True)
        scored = matches != IGNORED
        scores.append(image.dt_scores[scored])
        labels.append(image.dt_labels[scored])
        hits.append(matches[scored] >= 0)
        num_gt += np.bincount(image.gt_labels[~image.gt_crowd], minlength=num_classes)
    all_scores, all_labels, all_hits = (np.concatenate(x) if x else np.zeros(0) for x in (scores, labels, hits))
    all_hits = all_hits.astype(bool)
    per_class = [f1_curve(all_scores[all_labels == k], all_hits[all_labels == k], int(num_gt[k]))
                 for k in range(num_classes)]
    return per_class, f1_curve(all_scores, all_hits, int(num_gt.sum()))
