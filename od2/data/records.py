"""Dataset records: the format every dataset loader returns (see docs/architecture.md).

A dataset is a :class:`DatasetInfo`; each image is an :data:`ImageRecord`, a plain dict whose
box arrays are numpy arrays in absolute XYXY pixels of the original image.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

import numpy as np

__all__ = [
    "CleanedBoxes",
    "DatasetInfo",
    "ImageRecord",
    "clean_boxes",
    "coco_gt_from_records",
    "make_record",
    "merge_datasets",
]


class ImageRecord(TypedDict):
    """One image of a dataset. At runtime this is a plain ``dict``.

    Keys:
        file_name: absolute path of the image file.
        image_id: the image's id in ``DatasetInfo.coco_gt``.
        height, width: original image size in pixels.
        boxes: float32 [N, 4], XYXY in original-image pixels.
        labels: int64 [N], contiguous class labels ``0..K-1``.
        iscrowd: bool [N], crowd (COCO) or difficult (VOC) boxes that evaluation ignores.
    """

    file_name: str
    image_id: int
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray


@dataclasses.dataclass
class DatasetInfo:
    """A loaded dataset: per-image records plus what evaluation and the model need.

    Attributes:
        name: catalog name, e.g. ``"coco_2017_val"``.
        records: one :data:`ImageRecord` per image, images without boxes included.
        class_names: index = contiguous label.
        category_ids: contiguous label -> category id used in ``coco_gt`` and results files.
        coco_gt: COCO-format ground truth dict (``images``, ``annotations``, ``categories``).
        skipped: counts of boxes the loader changed or dropped, e.g. ``{"degenerate_box": 2}``, and of images the
            integrity check left out (``unreadable_image``, see od2.data.image_check).
        unreadable_images: {file: reason} of the images the integrity check left out.
    """

    name: str
    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int]
    coco_gt: dict[str, Any]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    unreadable_images: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.category_ids):
            raise ValueError(
                f"dataset {self.name!r}: {len(self.class_names)} class names but "
                f"{len(self.category_ids)} category ids"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes K (labels are ``0..K-1``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)


def make_record(
    file_name: str,
    image_id: int,
    height: int,
    width: int,
    boxes: np.ndarray | Sequence[Sequence[float]],
    labels: np.ndarray | Sequence[int],
    iscrowd: np.ndarray | Sequence[bool],
) -> ImageRecord:
    """Build an :data:`ImageRecord` with the dtypes and shapes the contract fixes.

    Args:
        boxes: [N, 4] XYXY pixels (any float dtype; stored as float32, [0, 4] when N = 0).
        labels: [N] contiguous labels (stored as int64).
        iscrowd: [N] (stored as bool).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    iscrowd = np.asarray(iscrowd, dtype=bool).reshape(-1)
    if not len(boxes) == len(labels) == len(iscrowd):
        raise ValueError(
            f"{file_name}: {len(boxes)} boxes, {len(labels)} labels and {len(iscrowd)} crowd flags"
        )
    return ImageRecord(
        file_name=str(file_name),
        image_id=int(image_id),
        height=int(height),
        width=int(width),
        boxes=boxes,
        labels=labels,
        iscrowd=iscrowd,
    )


@dataclasses.dataclass(frozen=True)
class CleanedBoxes:
    """Result of :func:`clean_boxes`.

    Attributes:
        boxes: float64 [M, 4], the kept boxes, clipped to their image.
        keep: bool [N], which input boxes were kept (M = keep.sum()).
        num_clipped: kept boxes that extended outside their image and were clipped.
        num_degenerate: dropped boxes with zero or negative width or height after clipping.
    """

    boxes: np.ndarray
    keep: np.ndarray
    num_clipped: int
    num_degenerate: int


def clean_boxes(
    boxes: np.ndarray,
    heights: np.ndarray | int,
    widths: np.ndarray | int,
    source: str,
    box_names: Sequence[Any] | None = None,
) -> CleanedBoxes:
    """Clip XYXY boxes to their image and drop the degenerate ones.

    Args:
        boxes: [N, 4] XYXY pixels.
        heights, widths: the image size of each box, scalars or [N] arrays.
        source: what the boxes come from (a file name), used in error messages.
        box_names: [N] how to name each box in error messages (e.g. annotation ids);
            default: its index.

    Raises:
        ValueError: a box has a NaN or infinite coordinate; the message names ``source`` and the box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        name = box_names[bad] if box_names is not None else bad
        raise ValueError(
            f"{source}: box {name} has a non-finite coordinate {boxes[bad].tolist()} "
            f"({int((~finite).sum())} such boxes in total)"
        )
    heights = np.broadcast_to(np.asarray(heights, dtype=np.float64), (len(boxes),))
    widths = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(boxes),))
    upper = np.stack([widths, heights, widths, heights], axis=1)
    clipped = np.clip(boxes, 0.0, upper)
    valid = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = (clipped != boxes).any(axis=1)
    return CleanedBoxes(
        boxes=clipped[valid],
        keep=valid,
        num_clipped=int((changed & valid).sum()),
        num_degenerate=int((~valid).sum()),
    )


def merge_datasets(name: str, datasets: Iterable[DatasetInfo]) -> DatasetInfo:
    """Concatenate datasets that share one label space (e.g. COCO train2014 + valminusminival).

    Records and ``coco_gt`` images/annotations are concatenated, skip counts summed.

    Raises:
        ValueError: the class names or category ids differ, or an image or annotation id repeats.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError(f"dataset {name!r}: nothing to merge")
    first = datasets[0]
    for other in datasets[1:]:
        if other.class_names != first.class_names or other.category_ids != first.category_ids:
            raise ValueError(
                f"dataset {name!r}: cannot merge {first.name!r} and {other.name!r}, "
                "their categories differ"
            )
    images = [img for d in datasets for img in d.coco_gt["images"]]
    annotations = [ann for d in datasets for ann in d.coco_gt["annotations"]]
    for what, items in (("image", images), ("annotation", annotations)):
        ids = Counter(item["id"] for item in items)
        repeated = [i for i, n in ids.items() if n > 1]
        if repeated:
            raise ValueError(
                f"dataset {name!r}: {len(repeated)} {what} ids appear in more than one of "
                f"{[d.name for d in datasets]}, e.g. {repeated[:5]}"
            )
    skipped: Counter[str] = Counter()
    for d in datasets:
        skipped.update(d.skipped)
    return DatasetInfo(
        name=name,
        records=[r for d in datasets for r in d.records],
        class_names=list(first.class_names),
        category_ids=list(first.category_ids),
        coco_gt={
            "images": images,
            "annotations": annotations,
            "categories": first.coco_gt["categories"],
        },
        skipped=dict(skipped),
        unreadable_images={path: reason for d in datasets for path, reason in d.unreadable_images.items()},
    )


def coco_gt_from_records(records: Sequence[ImageRecord], class_names: Sequence[str]) -> dict[str, Any]:
    """COCO ground truth for records with contiguous labels: category id = label + 1, ``area`` = box area,
    ``iscrowd`` from the record, ``file_name`` the image's base name."""
    images, annotations = [], []
    for r in records:
        images.append(
            {
                "id": r["image_id"],
                "file_name": os.path.basename(r["file_name"]),
                "height": r["height"],
                "width": r["width"],
            }
        )
        for box, label, crowd in zip(r["boxes"].tolist(), r["labels"].tolist(), r["iscrowd"].tolist()):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": r["image_id"],
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(crowd),
                }
            )
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}
