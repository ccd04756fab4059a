"""Load COCO-format instance annotations (pycocotools json) into a :class:`DatasetInfo`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from od2.data.records import DatasetInfo, ImageRecord, clean_boxes, make_record

__all__ = ["coco_image_root_candidates", "load_coco_json"]

logger = logging.getLogger(__name__)


def load_coco_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    name: str | None = None,
    *,
    keep_segmentation: bool = False,
) -> DatasetInfo:
    """Read a COCO instances json.

    Labels are contiguous ``0..K-1`` in order of sorted category id; ``category_ids[k]`` maps back.
    ``bbox`` ``[x, y, w, h]`` becomes XYXY. Boxes reaching outside their image are clipped
    (counted in ``skipped["clipped_box"]``); boxes with zero or negative area after clipping are
    dropped (``skipped["degenerate_box"]``). Crowd annotations are kept with ``iscrowd=True``;
    images without annotations are kept. Image files are not checked here (too slow for COCO).

    ``coco_gt`` is the json as loaded, with ``area`` (box area) and ``iscrowd`` (0) added to
    annotations that lack them and ``annotations: []`` added when absent (image-info files).
    Polygon/RLE ``segmentation`` is removed unless ``keep_segmentation``: od2 evaluates boxes only
    and the polygons of COCO train2017 take gigabytes of memory.

    Args:
        json_file: the annotation file.
        image_root: folder that image ``file_name`` entries are relative to. None: the first of
            :func:`coco_image_root_candidates` that holds the json's first image (the json's folder
            when it lists no image).
        name: dataset name for messages and ``DatasetInfo.name``; default: the json file's stem.

    Raises:
        ValueError: the file is not valid JSON, lacks a required key, has a duplicate image id,
            an annotation refers to an unknown category or image, or a box is not finite.
            The message names the file.
        FileNotFoundError: ``image_root`` is None and no candidate folder holds the first image; the
            message names the folders tried.
    """
    json_file = Path(json_file)
    name = name if name is not None else json_file.stem
    coco = _read_json(json_file)
    categories = _require(coco, "categories", json_file, "the top level")
    images = _require(coco, "images", json_file, "the top level")
    annotations = coco.setdefault("annotations", [])

    category_ids, class_names = _parse_categories(categories, json_file)
    label_of = {cid: k for k, cid in enumerate(category_ids)}
    image_index = _index_images(images, json_file)
    if image_root is None:
        image_root = _find_image_root(json_file, images)
    ann_ids, img_idx, labels, iscrowd, xywh = _parse_annotations(
        annotations, json_file, label_of, image_index, keep_segmentation
    )

    heights = np.array([img["height"] for img in images], dtype=np.float64)
    widths = np.array([img["width"] for img in images], dtype=np.float64)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    cleaned = clean_boxes(xyxy, heights[img_idx], widths[img_idx], str(json_file), ann_ids)
    keep = cleaned.keep
    records = _group_by_image(
        images,
        Path(image_root),
        img_idx[keep],
        cleaned.boxes,
        labels[keep],
        iscrowd[keep],
    )
    skipped = {"clipped_box": cleaned.num_clipped, "degenerate_box": cleaned.num_degenerate}
    logger.info(
        "%s: %d images, %d boxes, %d classes from %s; clipped %d boxes, dropped %d degenerate",
        name,
        len(records),
        int(keep.sum()),
        len(class_names),
        json_file,
        cleaned.num_clipped,
        cleaned.num_degenerate,
    )
    return DatasetInfo(
        name=name,
        records=records,
        class_names=class_names,
        category_ids=category_ids,
        coco_gt=coco,
        skipped=skipped,
    )


def coco_image_root_candidates(json_file: str | os.PathLike) -> list[Path]:
    """The folders a COCO json's images are looked for in when no image folder is named, in order:

    1. ``{D}/../{S}/`` for ``{D}/annotations/instances_{S}.json`` or ``{D}/annotations/{S}.json``: COCO's own layout,
       which ``od2 data convert --to coco`` writes;
    2. ``{D}/{S}/`` for ``{D}/{S}.json``: a folder named after the json, beside it;
    3. ``{D}/images/``: the folder beside the json most exports use;
    4. ``{D}/``: the json's own folder.
    """
    json_file = Path(json_file)
    folder, stem = json_file.parent, json_file.stem
    candidates = []
    if folder.name == "annotations":
        candidates.append(folder.parent / stem.removeprefix("instances_"))
    candidates += [folder / stem, folder / "images", folder]
    return list(dict.fromkeys(candidates))


def _find_image_root(json_file: Path, images: list[dict]) -> Path:
    """The first of :func:`coco_image_root_candidates` holding the json's first image (the json's folder when the
    json lists none), or a FileNotFoundError naming the folders tried."""
    candidates = coco_image_root_candidates(json_file)
    if not images:
        return json_file.parent
    first = str(images[0]["file_name"])
    for candidate in candidates:
        if (candidate / first).is_file():
            return candidate
    tried = ", ".join(f"{c}/" for c in candidates)
    raise FileNotFoundError(
        f"{json_file}: the folder of its images was not named and its first image {first!r} is in none of the "
        f"folders tried: {tried}. Name the folder: coco:ANNOTATIONS.json:IMAGE_DIR (or --images DIR)"
    )


def _read_json(json_file: Path) -> dict[str, Any]:
    """Parse ``json_file``; a decode error or a non-object top level becomes a ValueError naming it."""
    with open(json_file, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{json_file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{json_file}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _require(obj: Any, key: str, json_file: Path, where: str) -> Any:
    """``obj[key]``, or a ValueError naming the file, the key and ``where`` it was expected."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{json_file}: expected an object in {where}, got {type(obj).__name__}")
    if key not in obj:
        raise ValueError(f"{json_file}: missing required key {key!r} in {where}")
    return obj[key]


def _parse_categories(categories: list[dict], json_file: Path) -> tuple[list[int], list[str]]:
    """Sorted category ids and their names (names in the same order)."""
    names: dict[int, str] = {}
    for i, cat in enumerate(categories):
        where = f"categories[{i}]"
        cid = _require(cat, "id", json_file, where)
        if cid in names:
            raise ValueError(f"{json_file}: {where}: category id {cid} appears twice")
        names[cid] = str(_require(cat, "name", json_file, where))
    ids = sorted(names)
    return ids, [names[c] for c in ids]


def _index_images(images: list[dict], json_file: Path) -> dict[int, int]:
    """Map image id -> position in ``images``, checking the keys records need."""
    index: dict[int, int] = {}
    for i, img in enumerate(images):
        where = f"images[{i}]"
        image_id = _require(img, "id", json_file, where)
        for key in ("file_name", "height", "width"):
            _require(img, key, json_file, f"{where} (id {image_id})")
        if image_id in index:
            raise ValueError(f"{json_file}: {where}: image id {image_id} appears twice (first at "
                             f"images[{index[image_id]}])")
        index[image_id] = i
    return index


def _parse_annotations(
    annotations: list[dict],
    json_file: Path,
    label_of: dict[int, int],
    image_index: dict[int, int],
    keep_segmentation: bool,
) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate annotations, fill in ``area``/``iscrowd`` and collect per-annotation arrays.

    Returns:
        ann_ids: [A] where each annotation is, ``annotations[i] (id N)`` (for error messages).
        img_idx: int64 [A] position of each annotation's image in ``images``.
        labels: int64 [A] contiguous labels.
        iscrowd: bool [A].
        xywh: float64 [A, 4] the ``bbox`` entries.
    """
    num = len(annotations)
    ann_ids: list[Any] = [None] * num
    img_idx = np.empty(num, dtype=np.int64)
    labels = np.empty(num, dtype=np.int64)
    iscrowd = np.empty(num, dtype=bool)
    bboxes: list[Any] = [None] * num
    for i, ann in enumerate(annotations):
        ann_id = _require(ann, "id", json_file, f"annotations[{i}]")
        where = f"annotations[{i}] (id {ann_id})"
        category_id = _require(ann, "category_id", json_file, where)
        image_id = _require(ann, "image_id", json_file, where)
        bbox = _require(ann, "bbox", json_file, where)
        if category_id not in label_of:
            raise ValueError(
                f"{json_file}: {where} has category_id {category_id!r}, which is not "
                f"in 'categories' (known ids: {sorted(label_of)})"
            )
        if image_id not in image_index:
            raise ValueError(f"{json_file}: {where} refers to unknown image_id {image_id!r}")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{json_file}: {where} has bbox {bbox!r}, expected [x, y, w, h]")
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(bbox[2]) * float(bbox[3])
        if not keep_segmentation:
            ann.pop("segmentation", None)
        ann_ids[i] = where
        img_idx[i] = image_index[image_id]
        labels[i] = label_of[category_id]
        iscrowd[i] = bool(ann["iscrowd"])
        bboxes[i] = bbox
    try:
        xywh = np.array(bboxes, dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError) as e:
        bad = next(i for i, bbox in enumerate(bboxes) if not _numeric(bbox))
        raise ValueError(f"{json_file}: {ann_ids[bad]} has bbox {bboxes[bad]!r} with a non-numeric coordinate") from e
    return ann_ids, img_idx, labels, iscrowd, xywh


def _numeric(bbox: list[Any]) -> bool:
    try:
        np.array(bbox, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def _group_by_image(
    images: list[dict],
    image_root: Path,
    img_idx: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray,
) -> list[ImageRecord]:
    """One record per image (in ``images`` order) from flat per-box arrays.

    Args:
        img_idx: int64 [M] image position of each box; boxes: [M, 4] XYXY; labels: [M]; iscrowd: [M].
    """
    order = np.argsort(img_idx, kind="stable")
    counts = np.bincount(img_idx, minlength=len(images))
    starts = np.concatenate([[0], np.cumsum(counts)])
    boxes, labels, iscrowd = boxes[order], labels[order], iscrowd[order]
    root = os.path.abspath(image_root)
    records = []
    for i, img in enumerate(images):
        s, e = starts[i], starts[i + 1]
        records.append(
            make_record(
                file_name=os.path.join(root, img["file_name"]),
                image_id=img["id"],
                height=img["height"],
                width=img["width"],
                boxes=boxes[s:e],
                labels=labels[s:e],
                iscrowd=iscrowd[s:e],
            )
        )
    return records
