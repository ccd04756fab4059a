"""COCO bbox evaluation: the 12 AP/AR numbers of pycocotools, computed with faster-coco-eval.

faster-coco-eval implements pycocotools' matching and accumulation in C++ and gives the same numbers
(checked to 1e-9 against pycocotools in tests/evaluation). Detections are COCO results dicts
(``image_id, category_id, bbox=[x, y, w, h], score``) in original-image pixels.

Detections pycocotools cannot score the same way twice are rejected with their index: a bbox that is not four
finite numbers, a score that is not finite (a NaN inside a bbox moves AP by 0.003 with no word). Detections it scores
well but that usually mean a mistake upstream are counted and logged as warnings and scored as pycocotools scores
them: category ids absent from the ground truth (they count in no category; a results file of a model with more
classes than the ground truth is legitimate), negative scores (they only rank detections; raw logits?) and
negative widths or heights (they match nothing; XYXY boxes written as XYWH?). Rejecting these would make od2 refuse
files that the reference scores.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from od2.utils.atomic_write import atomic_write

logger = logging.getLogger(__name__)

STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)

# (is_precision, IoU label, area label, maxDets) of each stat, in pycocotools' summarize() order.
_SUMMARY_ROWS: tuple[tuple[bool, str, str, int], ...] = (
    (True, "0.50:0.95", "all", 100),
    (True, "0.50", "all", 100),
    (True, "0.75", "all", 100),
    (True, "0.50:0.95", "small", 100),
    (True, "0.50:0.95", "medium", 100),
    (True, "0.50:0.95", "large", 100),
    (False, "0.50:0.95", "all", 1),
    (False, "0.50:0.95", "all", 10),
    (False, "0.50:0.95", "all", 100),
    (False, "0.50:0.95", "small", 100),
    (False, "0.50:0.95", "medium", 100),
    (False, "0.50:0.95", "large", 100),
)

_REQUIRED_GT_KEYS = ("images", "annotations", "categories")
_REQUIRED_DT_KEYS = ("image_id", "category_id", "bbox", "score")
_MAX_IDS_IN_MESSAGE = 10
_BBOX_LENGTH = 4


def _silent(*_args: Any, **_kwargs: Any) -> None:
    """Swallow faster-coco-eval's progress messages; the caller prints the table."""


@dataclass(frozen=True)
class CocoSummary:
    """The 12 COCO bbox numbers (fractions in [0, 1]; -1 where no ground truth makes one defined).

    ``eval_seconds`` is the wall time of one evaluation: loading the results, evaluate,
    accumulate and summarize (building the ground-truth index is not included).
    ``precision`` is pycocotools' ``eval['precision']`` array, float64 [T=10 IoU thresholds 0.50:0.05:0.95,
    R=101 recall thresholds 0:0.01:1, K categories, A=4 areas (all, small, medium, large), M=3 maxDets (1, 10, 100)],
    -1 where a category has no ground truth in that area; its K axis follows ``category_ids`` (ascending ids).
    Both are empty for a summary rebuilt from the 12 numbers alone (``od2 report``).
    """

    stats: tuple[float, ...]
    eval_seconds: float
    precision: np.ndarray | None = field(default=None, compare=False, repr=False)
    category_ids: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, float]:
        """Return ``{"AP": ..., "AP50": ..., ..., "ARl": ...}`` in pycocotools' order."""
        return dict(zip(STAT_NAMES, self.stats))

    def table(self) -> str:
        """Return the 12-line block exactly as pycocotools' ``COCOeval.summarize()`` prints it."""
        return "\n".join(
            _format_row(is_ap, iou, area, max_dets, value)
            for (is_ap, iou, area, max_dets), value in zip(_SUMMARY_ROWS, self.stats)
        )


def _format_row(is_ap: bool, iou: str, area: str, max_dets: int, value: float) -> str:
    """Format one summary line with pycocotools' field widths."""
    title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
    return f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {value:0.3f}"


class CocoEvaluator:
    """Evaluates bbox detections against one ground truth, indexing the ground truth only once.

    Build it once per dataset and call :meth:`evaluate` after every evaluation round of training.
    The ground-truth dict is deep-copied, so neither the caller's dict nor the detections are modified.
    """

    def __init__(self, coco_gt: dict, source: str = "ground truth") -> None:
        """Index ``coco_gt`` (COCO format: images, annotations, categories).

        ``source`` names the ground truth (e.g. its file path) in error messages.
        """
        _check_gt(coco_gt, source)
        # Our own deep copy, because faster-coco-eval writes bookkeeping keys ("ignore", ...) into GT
        # annotations; its use_deepcopy=True would also deep-copy every results list in loadRes.
        self._gt = COCO(copy.deepcopy(coco_gt), print_function=_silent)
        self._image_ids = frozenset(self._gt.getImgIds())
        self._category_ids = frozenset(self._gt.getCatIds())

    @property
    def num_images(self) -> int:
        """Number of images in the ground truth (every one is evaluated, with or without detections)."""
        return len(self._image_ids)

    def evaluate(self, detections: Sequence[dict], source: str = "detections") -> CocoSummary:
        """Evaluate COCO results (image_id, category_id, bbox [x, y, w, h] original pixels, score).

        An empty list is valid and scores 0 wherever ground truth exists, as pycocotools would.
        ``source`` names the detections (e.g. their file path) in error messages.
        Raises ValueError for a detection missing a key, naming an image id not in the ground truth, or whose bbox
        is not four finite numbers or score not finite. Logs a warning with the count of detections naming a
        category absent from the ground truth, with a negative score, or with a negative width or height (scored as
        pycocotools scores them).
        """
        results = _copy_results(detections, source)
        self._check_image_ids(results, source)
        self._warn_about_odd_results(results, source)
        start = time.perf_counter()
        coco_dt = self._gt.loadRes(results)
        coco_eval = COCOeval_faster(self._gt, coco_dt, iouType="bbox", print_function=_silent)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        seconds = time.perf_counter() - start
        return CocoSummary(stats=tuple(float(s) for s in coco_eval.stats), eval_seconds=seconds,
                           precision=np.asarray(coco_eval.eval["precision"]),
                           category_ids=tuple(int(c) for c in coco_eval.params.catIds))

    def _check_image_ids(self, results: Iterable[dict], source: str) -> None:
        """Raise a readable ValueError where pycocotools would fail an assert."""
        unknown = sorted({r["image_id"] for r in results} - self._image_ids)
        if unknown:
            shown = unknown[:_MAX_IDS_IN_MESSAGE]
            more = f" (and {len(unknown) - len(shown)} more)" if len(unknown) > len(shown) else ""
            raise ValueError(f"{source}: image ids not in the ground truth: {shown}{more}")

    def _warn_about_odd_results(self, results: Sequence[dict], source: str) -> None:
        """Log one warning per kind of scorable but suspicious detection, with its count and first index."""
        unknown = [i for i, r in enumerate(results) if r["category_id"] not in self._category_ids]
        if unknown:
            ids = sorted({results[i]["category_id"] for i in unknown})
            shown = ids[:_MAX_IDS_IN_MESSAGE]
            more = f" (and {len(ids) - len(shown)} more)" if len(ids) > len(shown) else ""
            logger.warning("%s: %d detections (first #%d) name category ids not in the ground truth %s%s: they "
                           "count in no category's AP, as in pycocotools", source, len(unknown), unknown[0], shown,
                           more)
        negative_scores = [i for i, r in enumerate(results) if r["score"] < 0]
        if negative_scores:
            logger.warning("%s: %d detections (first #%d) have a negative score: scores only rank detections, so "
                           "AP is as pycocotools gives it, but are they raw logits?", source, len(negative_scores),
                           negative_scores[0])
        negative_sizes = [i for i, r in enumerate(results) if r["bbox"][2] < 0 or r["bbox"][3] < 0]
        if negative_sizes:
            logger.warning("%s: %d detections (first #%d) have a negative width or height: they match no object "
                           "(as in pycocotools); bbox is [x, y, width, height], not [x1, y1, x2, y2]", source,
                           len(negative_sizes), negative_sizes[0])


def _check_gt(coco_gt: Any, source: str) -> None:
    """Raise ValueError unless ``coco_gt`` looks like a COCO ground-truth dict."""
    if not isinstance(coco_gt, dict):
        raise ValueError(f"{source}: expected a COCO ground-truth object, got {type(coco_gt).__name__}")
    missing = [key for key in _REQUIRED_GT_KEYS if key not in coco_gt]
    if missing:
        raise ValueError(f"{source}: COCO ground truth lacks key(s) {missing}")


def _copy_results(detections: Any, source: str) -> list[dict]:
    """Copy detections into plain-Python COCO results (loadRes adds keys to the dicts it gets).

    Also turns numpy/torch scalars into int/float so that the results behave like parsed JSON.
    """
    if not isinstance(detections, Sequence) or isinstance(detections, (str, bytes)):
        raise ValueError(f"{source}: expected a list of COCO results, got {type(detections).__name__}")
    results = []
    for index, det in enumerate(detections):
        if not isinstance(det, dict) or any(key not in det for key in _REQUIRED_DT_KEYS):
            raise ValueError(f"{source}: detection #{index} is not a dict with keys {list(_REQUIRED_DT_KEYS)}")
        bbox, score = _finite_bbox(det["bbox"]), _finite_number(det["score"])
        if bbox is None:
            raise ValueError(f"{source}: detection #{index} has bbox {det['bbox']!r}; expected {_BBOX_LENGTH} finite "
                             f"numbers [x, y, width, height]")
        if score is None:
            raise ValueError(f"{source}: detection #{index} has score {det['score']!r}; expected a finite number")
        results.append({
            "image_id": int(det["image_id"]),
            "category_id": int(det["category_id"]),
            "bbox": bbox,
            "score": score,
        })
    return results


def _finite_number(value: Any) -> float | None:
    """``value`` as a float, or None if it is not a finite number (NaN, inf, a string, None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and not isinstance(value, (str, bytes, bool)) else None


def _finite_bbox(bbox: Any) -> list[float] | None:
    """``bbox`` as four floats, or None unless it is a sequence of four finite numbers."""
    try:
        numbers = [_finite_number(v) for v in bbox]
    except TypeError:  # not iterable
        return None
    if len(numbers) != _BBOX_LENGTH or None in numbers:
        return None
    return numbers


def evaluate_detections(coco_gt: dict, detections: Sequence[dict]) -> CocoSummary:
    """Evaluate COCO results against ``coco_gt`` once (use :class:`CocoEvaluator` to evaluate repeatedly)."""
    return CocoEvaluator(coco_gt).evaluate(detections)


def _load_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file, naming the file in every error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} file {path} is not valid JSON: {e}") from e


def evaluate_json_files(gt_json_path: str | os.PathLike, dt_json_path: str | os.PathLike) -> CocoSummary:
    """Evaluate a COCO results file against a COCO ground-truth file.

    Raises FileNotFoundError for a missing file and ValueError for malformed JSON, a results file that
    is not a list of results, or results naming image ids absent from the ground truth; each message
    names the offending file.
    """
    coco_gt, detections = load_json_files(gt_json_path, dt_json_path)
    evaluator = CocoEvaluator(coco_gt, source=str(gt_json_path))
    return evaluator.evaluate(detections, source=str(dt_json_path))


def load_json_files(gt_json_path: str | os.PathLike, dt_json_path: str | os.PathLike) -> tuple[Any, Any]:
    """The parsed ground-truth and results files (FileNotFoundError / ValueError naming the file), unchecked:
    :meth:`CocoEvaluator.evaluate` checks them."""
    return _load_json(gt_json_path, "ground-truth"), _load_json(dt_json_path, "detections")


def write_summary_json(summary: CocoSummary, path: str | os.PathLike, **extra: Any) -> None:
    """Write ``{AP, ..., ARl, **extra}`` (e.g. ``s_per_img``, ``num_images``) to ``path`` atomically.

    A reader never sees a half-written file (:func:`od2.utils.atomic_write.atomic_write`).
    """
    payload = {**summary.as_dict(), **extra}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
