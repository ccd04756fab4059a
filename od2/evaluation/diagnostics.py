"""Everything an evaluation writes beside the 12 COCO numbers, into its folder (``OUTPUT_DIR/eval`` of a run):

- ``per_class.json``: {class name: {AP, AP50, AP75, APs, APm, APl, num_gt, num_dt, best_f1, best_score_thresh}}
  (:mod:`od2.evaluation.per_class`; None where the class has nothing to score);
- ``thresholds.json``: the score threshold of the best F1 overall and per class, with its precision and recall
  (:mod:`od2.evaluation.score_threshold`): the ``--score-thresh`` to give ``od2 predict``;
- ``confusion_matrix.json`` and ``.png`` at IoU 0.5 and the score threshold asked (:mod:`od2.evaluation.confusion`);
- ``pr_curves.png`` and ``f1_curves.png`` (:mod:`od2.evaluation.figures`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from od2.utils.atomic_write import atomic_write

from .coco_evaluator import CocoSummary
from .confusion import BACKGROUND, confusion_matrix, write_confusion_json
from .figures import plot_confusion_matrix, plot_f1_curves, plot_pr_curves
from .matching import images_with_boxes
from .per_class import category_names, format_per_class_table, per_class_results
from .score_threshold import f1_curves

IOU_THRESH = 0.5
DEFAULT_CONFUSION_SCORE_THRESH = 0.3  # od2 predict's default --score-thresh: the matrix shows what it would draw


@dataclass
class Diagnostics:
    """What :func:`write_diagnostics` wrote: the per-class rows, the best thresholds and the picture paths."""

    per_class: dict[str, dict[str, Any]]
    thresholds: dict[str, Any]
    figures: dict[str, str] = field(default_factory=dict)

    def summary_entries(self) -> dict[str, Any]:
        """The entries an evaluation's summary dict gets: ``per_class``, ``figures`` ({name: PNG path}),
        ``best_score_thresh`` and ``best_f1`` (overall)."""
        overall = self.thresholds["overall"]
        return {"per_class": self.per_class, "figures": self.figures,
                "best_score_thresh": overall["score_thresh"], "best_f1": overall["f1"]}

    def report(self) -> str:
        """The per-class table and the best score thresholds, as printed after the 12-line COCO block."""
        table = format_per_class_table(self.per_class, extra=("best_f1", "best_score_thresh"))
        overall = self.thresholds["overall"]
        if overall["score_thresh"] is None:
            best = "best score threshold by F1 (IoU 0.5): none (no detection matches an object)"
        else:
            best = (f"best score threshold by F1 (IoU 0.5): {overall['score_thresh']:.4f} (F1 {overall['f1']:.3f}, "
                    f"precision {overall['precision']:.3f}, recall {overall['recall']:.3f}): give it to "
                    f"`od2 predict --score-thresh`")
        return f"per-class results (AP in %):\n{table}\n{best}"


def write_diagnostics(coco_gt: dict, detections: Sequence[dict], summary: CocoSummary, out_dir: str | os.PathLike,
                      confusion_score_thresh: float = DEFAULT_CONFUSION_SCORE_THRESH) -> Diagnostics:
    """Write the per-class results, thresholds, confusion matrix and pictures of one evaluation into ``out_dir``.

    ``summary`` is :meth:`CocoEvaluator.evaluate`'s result for the same ``coco_gt`` and ``detections`` (COCO results,
    already checked by it).
    """
    if summary.precision is None:
        raise ValueError("write_diagnostics needs the summary of an evaluation (its precision array), not one "
                         "rebuilt from the 12 numbers")
    if not 0.0 <= confusion_score_thresh <= 1.0:
        raise ValueError(f"the confusion matrix's score threshold must be in [0, 1], got {confusion_score_thresh}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names_by_id = category_names(coco_gt)
    class_names = [names_by_id[c] for c in sorted(names_by_id)]
    per_class = per_class_results(summary.precision, summary.category_ids, coco_gt, detections)
    images = images_with_boxes(coco_gt, detections)
    class_curves, overall_curve = f1_curves(images, len(class_names), IOU_THRESH)
    class_best = {name: curve.best() for name, curve in zip(class_names, class_curves)}
    for name, best in class_best.items():
        per_class[name].update(best_f1=best["f1"], best_score_thresh=best["score_thresh"])
    thresholds = {"iou_thresh": IOU_THRESH, "overall": overall_curve.best(), "per_class": class_best}
    _write_json(per_class, out_dir / "per_class.json")
    _write_json(thresholds, out_dir / "thresholds.json")
    matrix = confusion_matrix(images, len(class_names), confusion_score_thresh, IOU_THRESH)
    write_confusion_json(matrix, class_names, confusion_score_thresh, IOU_THRESH, out_dir / "confusion_matrix.json")
    figures = {
        "pr_curves": plot_pr_curves(summary.precision, class_names, out_dir / "pr_curves.png"),
        "confusion_matrix": plot_confusion_matrix(matrix, [*class_names, BACKGROUND], confusion_score_thresh,
                                                  IOU_THRESH, out_dir / "confusion_matrix.png"),
        "f1_curves": plot_f1_curves(class_curves, overall_curve, class_names, out_dir / "f1_curves.png"),
    }
    return Diagnostics(per_class, thresholds, {name: str(path) for name, path in figures.items()})


def _write_json(payload: Any, path: Path) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
