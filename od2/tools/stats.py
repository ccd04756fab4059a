"""Dataset statistics: image, box and per-class counts, COCO size buckets, image sizes.

``dataset_stats(info)`` returns a plain dict (json-serialisable); ``format_stats(stats)`` renders it
as a text table (what ``od2 data stats`` prints).

Size buckets follow COCO's area ranges applied to the box area ``w * h`` in original-image pixels:
``small`` if area < 32², ``medium`` if 32² <= area < 96², ``large`` otherwise. (COCO evaluation uses
the annotation's ``area`` field, which for segmentation datasets is the mask area; here it is
always the box area.) Every box, crowd/difficult ones included, is counted in ``boxes`` and in a
bucket; ``crowd`` counts the crowd (COCO) / difficult (VOC) boxes among them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from od2.data.records import DatasetInfo

__all__ = ["LARGE", "MEDIUM", "SIZE_BUCKETS", "SMALL", "dataset_stats", "format_stats"]

SMALL, MEDIUM, LARGE = "small", "medium", "large"
SIZE_BUCKETS = (SMALL, MEDIUM, LARGE)
_SMALL_MAX_AREA = 32.0**2  # area < this: small
_MEDIUM_MAX_AREA = 96.0**2  # area < this: medium


def _bucket_counts(areas: np.ndarray) -> dict[str, int]:
    small = areas < _SMALL_MAX_AREA
    medium = (areas >= _SMALL_MAX_AREA) & (areas < _MEDIUM_MAX_AREA)
    return {SMALL: int(small.sum()), MEDIUM: int(medium.sum()), LARGE: int((~small & ~medium).sum())}


def dataset_stats(info: DatasetInfo, unreadable: dict[str, str] | None = None) -> dict[str, Any]:
    """Count images, boxes and classes of a dataset.

    ``unreadable`` ({file: reason}, from :func:`od2.data.image_check.check_images`) names the images that fail the
    integrity check; by default those the dataset's loading already left out (``info.unreadable_images``).

    Returns:
        A dict with ``name``, ``num_images``, ``num_images_without_boxes``, ``num_boxes``, ``num_crowd``,
        ``sizes`` (``{small, medium, large}`` over all boxes), ``image_width`` and ``image_height``
        (``{min, max}``, None for an empty dataset), ``skipped`` (the loader's counted skips) and
        ``classes``: one dict per label with ``label``, ``name``, ``category_id``, ``images`` (images
        with at least one box of the class), ``boxes``, ``crowd`` and ``sizes``.
    """
    num_classes = info.num_classes
    records = info.records
    box_count = np.zeros(num_classes, dtype=np.int64)
    image_count = np.zeros(num_classes, dtype=np.int64)
    crowd_count = np.zeros(num_classes, dtype=np.int64)
    all_labels, all_areas = [], []
    for r in records:
        labels = r["labels"]
        boxes = r["boxes"].astype(np.float64)
        box_count += np.bincount(labels, minlength=num_classes)[:num_classes]
        crowd_count += np.bincount(labels[r["iscrowd"]], minlength=num_classes)[:num_classes]
        image_count[np.unique(labels)] += 1
        all_labels.append(labels)
        all_areas.append((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    labels = np.concatenate(all_labels) if all_labels else np.zeros(0, dtype=np.int64)
    areas = np.concatenate(all_areas) if all_areas else np.zeros(0)
    widths = [r["width"] for r in records]
    heights = [r["height"] for r in records]
    classes = [
        {
            "label": k,
            "name": info.class_names[k],
            "category_id": info.category_ids[k],
            "images": int(image_count[k]),
            "boxes": int(box_count[k]),
            "crowd": int(crowd_count[k]),
            "sizes": _bucket_counts(areas[labels == k]),
        }
        for k in range(num_classes)
    ]
    return {
        "name": info.name,
        "num_images": len(records),
        "num_images_without_boxes": sum(len(r["boxes"]) == 0 for r in records),
        "num_boxes": int(len(labels)),
        "num_crowd": int(crowd_count.sum()),
        "sizes": _bucket_counts(areas),
        "image_width": {"min": min(widths), "max": max(widths)} if records else None,
        "image_height": {"min": min(heights), "max": max(heights)} if records else None,
        "skipped": dict(info.skipped),
        "unreadable_images": dict(info.unreadable_images if unreadable is None else unreadable),
        "classes": classes,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """Render :func:`dataset_stats` output as a text table."""
    lines = [
        f"dataset {stats['name']}: {stats['num_images']} images ({stats['num_images_without_boxes']} without boxes), "
        f"{stats['num_boxes']} boxes ({stats['num_crowd']} crowd/difficult), {len(stats['classes'])} classes",
    ]
    if stats["image_width"] is not None:
        w, h = stats["image_width"], stats["image_height"]
        lines.append(f"image size: width {w['min']}..{w['max']}, height {h['min']}..{h['max']} px")
    skipped = {k: v for k, v in stats["skipped"].items() if v}
    lines.append(f"loader skips: {', '.join(f'{k} {v}' for k, v in skipped.items()) if skipped else 'none'}")
    unreadable = stats.get("unreadable_images") or {}
    lines.append(f"unreadable images: {len(unreadable) or 'none'}")
    lines += [f"  {path}: {reason}" for path, reason in unreadable.items()]
    lines.append("box sizes by area w*h: small < 32^2 <= medium < 96^2 <= large")
    rows = [
        [str(c["label"]), c["name"], str(c["category_id"]), str(c["images"]), str(c["boxes"]), str(c["crowd"]),
         *(str(c["sizes"][b]) for b in SIZE_BUCKETS)]
        for c in stats["classes"]
    ]
    rows.append(["", "total", "", str(stats["num_images"]), str(stats["num_boxes"]), str(stats["num_crowd"]),
                 *(str(stats["sizes"][b]) for b in SIZE_BUCKETS)])
    header = ["label", "class", "cat_id", "images", "boxes", "crowd", *SIZE_BUCKETS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {1}  # the class name column is left-aligned, numbers right-aligned

    def fmt(row: list[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) if i in left else cell.rjust(widths[i]) for i, cell in enumerate(row))

    lines += [fmt(header), fmt(["-" * w for w in widths]), *(fmt(row) for row in rows)]
    return "\n".join(lines)
