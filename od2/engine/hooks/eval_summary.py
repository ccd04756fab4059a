"""What the writers and trackers take from an evaluation summary: its scalars, its per-class results, its pictures.

A summary (``evaluator(model)``, for COCO ``od2.evaluation.evaluate.evaluate_model``) holds numbers (``AP``, ...,
``loss_cls`` with TEST.VAL_LOSS), and may hold ``per_class`` (``{class name: {"AP": ..., "AP50": ..., "num_gt": ...,
"num_dt": ...}}``) and ``figures`` (``{name: PNG path}``); summaries without them are fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's top-level numbers, as ``{"eval/<key>": value}``."""
    return {f"eval/{key}": float(value) for key, value in summary.items() if is_number(value)}


def per_class_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """``summary["per_class"]``'s numbers as ``{"eval_per_class/<class>/<key>": value}`` (empty without it)."""
    return {f"eval_per_class/{name}/{key}": float(value)
            for name, results in (summary.get("per_class") or {}).items()
            for key, value in results.items() if is_number(value)}


def figures(summary: dict[str, Any]) -> dict[str, Path]:
    """``summary["figures"]``'s pictures that exist, ``{name: path}`` (empty without it)."""
    return {name: Path(path) for name, path in (summary.get("figures") or {}).items() if Path(path).is_file()}


def read_png(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of the picture at ``path``."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
