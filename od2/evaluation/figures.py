"""The evaluation's pictures: precision-recall curves, the confusion matrix, F1 against score threshold (small PNGs).

Drawn on matplotlib ``Figure`` objects with the Agg canvas, without pyplot: no global backend is switched and no
figure is left registered, so a periodic evaluation inside a notebook or a training loop is not disturbed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from od2.utils.atomic_write import atomic_write

from .score_threshold import F1Curve

RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # pycocotools' params.recThrs
_MAX_LEGEND_CLASSES = 12  # beyond this a legend hides the curves: classes are drawn thin and only the mean is named
_MAX_ANNOTATED_CLASSES = 25  # beyond this the confusion matrix cells are too small for their counts
_DPI = 80
_THRESHOLD_GRID = np.linspace(0.0, 1.0, 1001)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # matplotlib loads only where a picture is drawn

    return Figure(figsize=(width, height), dpi=_DPI)


def _save(fig, path: str | os.PathLike) -> Path:
    # Margins are set per figure: tight_layout would double the drawing time of a periodic evaluation's pictures.
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")


def _mean_valid(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the entries > -1 along ``axis``; NaN where there are none."""
    valid = values > -1
    total = np.where(valid, values, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def plot_pr_curves(precision: np.ndarray, class_names: Sequence[str], path: str | os.PathLike) -> Path:
    """Precision against recall per class at IoU 0.50 (left) and averaged over IoU 0.50:0.95 (right).

    ``precision``: pycocotools' float [T=10, R=101, K, A, M] (area all, maxDets 100 are drawn); a class without
    ground truth (all -1) has no curve. The legend gives each class's AP50 / AP.
    """
    fig = _figure(10, 4)
    panels = fig.subplots(1, 2)
    curves = {"IoU 0.50": precision[0, :, :, 0, -1], "IoU 0.50:0.95": _mean_valid(precision[:, :, :, 0, -1], 0)}
    many = len(class_names) > _MAX_LEGEND_CLASSES
    for ax, (title, by_class) in zip(panels, curves.items()):  # by_class [R, K]
        by_class = np.where(by_class > -1, by_class, np.nan)
        for k, name in enumerate(class_names):
            if np.isnan(by_class[:, k]).all():
                continue
            ap = float(np.nanmean(by_class[:, k]))
            ax.plot(RECALL_THRESHOLDS, by_class[:, k], linewidth=0.6 if many else 1.4,
                    label=None if many else f"{name} {ap:.3f}")
        mean = np.nanmean(by_class, axis=1) if not np.isnan(by_class).all() else None
        if mean is not None:
            ax.plot(RECALL_THRESHOLDS, mean, color="black", linewidth=2.5, label=f"all classes {np.mean(mean):.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"precision-recall, {title}")
        ax.grid(alpha=0.3)
        _legend(ax)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.92, wspace=0.18)
    return _save(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], score_thresh: float, iou_thresh: float,
                          path: str | os.PathLike) -> Path:
    """The confusion matrix (int [K+1, K+1], rows ground truth, columns detections, background last), coloured by
    each row's share and annotated with counts when the classes are few."""
    size = min(4 + 0.45 * len(labels), 16)
    fig = _figure(size, size * 0.85)
    font = 8 if len(labels) <= _MAX_ANNOTATED_CLASSES else 5
    label_inches = 0.3 + 0.6 * font / 72 * max(len(label) for label in labels)  # room for the longest tick label
    fig.subplots_adjust(left=min(label_inches / size, 0.4), bottom=min(label_inches / (size * 0.85), 0.4),
                        right=0.92, top=0.93)
    ax = fig.subplots()
    row_sums = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_sums, out=np.zeros(matrix.shape), where=row_sums > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels, fontsize=font)
    if len(labels) <= _MAX_ANNOTATED_CLASSES:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set(xlabel="detected as", ylabel="ground truth",
           title=f"confusion matrix, IoU {iou_thresh:g}, score >= {score_thresh:g}")
    return _save(fig, path)


def _f1_on_grid(curve: F1Curve) -> np.ndarray:
    """F1 [len(_THRESHOLD_GRID)] when keeping the scores >= each grid threshold (0 where none is kept): the curve of
    hundreds of thousands of distinct scores drawn with a thousand points."""
    kept = np.searchsorted(-curve.thresholds, -_THRESHOLD_GRID, side="right")  # thresholds >= t
    return np.where(kept > 0, curve.f1[np.maximum(kept - 1, 0)], 0.0)


def _best_label(curve: F1Curve) -> str:
    best = curve.best()
    return "F1 0" if best["score_thresh"] is None else f"F1 {best['f1']:.2f} at {best['score_thresh']:.3f}"


def plot_f1_curves(per_class: Sequence[F1Curve], overall: F1Curve, class_names: Sequence[str],
                   path: str | os.PathLike) -> Path:
    """F1 against score threshold per class (thin) and overall (black), the overall best marked."""
    fig = _figure(6, 4)
    ax = fig.subplots()
    many = len(class_names) > _MAX_LEGEND_CLASSES
    for curve, name in zip(per_class, class_names):
        if curve.num_gt and len(curve.thresholds):
            ax.plot(_THRESHOLD_GRID, _f1_on_grid(curve), linewidth=0.6 if many else 1.2,
                    label=None if many else f"{name} {_best_label(curve)}")
    if len(overall.thresholds):
        ax.plot(_THRESHOLD_GRID, _f1_on_grid(overall), color="black", linewidth=2.5,
                label=f"all {_best_label(overall)}")
        if overall.best()["score_thresh"] is not None:
            ax.axvline(overall.best()["score_thresh"], color="black", linestyle=":", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold", ylabel="F1 (IoU 0.50)",
           title="F1 against score threshold")
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.92)
    return _save(fig, path)
