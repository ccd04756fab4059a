"""Load a YOLO txt dataset (Ultralytics layout: ``data.yaml``, ``images/``, ``labels/``) into a :class:`DatasetInfo`.

Layout::

    data.yaml                  path: .          # optional dataset root, relative to this file's folder
                               train: images/train     # folder of images, or a .txt list of image paths
                               val: images/val         # (relative to `path`); a list of several is allowed
                               names: [cat, dog]       # or {0: cat, 1: dog}; `nc` optional and checked
    images/train/a.jpg         labels/train/a.txt      # one `class cx cy w h` line per box, normalised to [0, 1]

The label file of an image is found by replacing the last ``images`` component of its path with
``labels`` and its extension with ``.txt`` (Ultralytics' rule); an image path without an ``images``
component has its label file next to it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from od2.data.records import DatasetInfo, ImageRecord, clean_boxes, coco_gt_from_records, make_record

__all__ = ["IMAGE_SUFFIXES", "label_path_for", "load_yolo", "read_yolo_yaml"]

logger = logging.getLogger(__name__)

#: Image file suffixes (lower case) collected from an image folder.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")

_EXIF_ORIENTATION = 0x0112
# Box edges computed as cx -/+ w/2 may miss [0, 1] by rounding; within this they are clipped silently.
_NORM_EPS = 1e-6


def read_yolo_yaml(data_yaml: str | os.PathLike) -> tuple[dict[str, Any], Path, list[str]]:
    """Parse and check a YOLO ``data.yaml``.

    Returns:
        ``(data, root, class_names)``: the parsed mapping, the dataset root (``path`` resolved
        against the yaml's folder; the folder itself when ``path`` is absent) and the class names.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a YAML mapping, or ``names``/``nc`` are missing, malformed or
            disagree. The message names the file.
    """
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise FileNotFoundError(f"YOLO data file {data_yaml} does not exist")
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{data_yaml}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{data_yaml}: expected a YAML mapping (path, train, val, names), got {type(data).__name__}")
    root = data_yaml.parent
    if data.get("path"):
        root = root / Path(str(data["path"]))  # an absolute `path` replaces the yaml's folder
    return data, Path(os.path.abspath(root)), _parse_names(data, data_yaml)


def _parse_names(data: dict[str, Any], data_yaml: Path) -> list[str]:
    """``names`` as a list (from a list or an ``{index: name}`` dict), checked against ``nc``."""
    names = data.get("names")
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 0):
        raise ValueError(f"{data_yaml}: 'nc' is {nc!r}, expected a non-negative integer")
    if names is None:
        if nc is None:
            raise ValueError(f"{data_yaml}: no 'names' (a list of class names, or {{index: name}})")
        return [f"class{i}" for i in range(nc)]  # Ultralytics' default names
    if isinstance(names, Mapping):
        by_index: dict[int, str] = {}
        for key, value in names.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"{data_yaml}: 'names' key {key!r} is not a class index") from None
            by_index[index] = str(value)
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(
                f"{data_yaml}: 'names' keys must be the class indices 0..{len(by_index) - 1}, got {sorted(by_index)}"
            )
        class_names = [by_index[i] for i in range(len(by_index))]
    elif isinstance(names, list):
        class_names = [str(n) for n in names]
    else:
        raise ValueError(f"{data_yaml}: 'names' is a {type(names).__name__}, expected a list or {{index: name}}")
    if nc is not None and nc != len(class_names):
        raise ValueError(f"{data_yaml}: 'nc' is {nc} but 'names' has {len(class_names)} entries")
    return class_names


def label_path_for(image_path: str | os.PathLike) -> Path:
    """The label file of an image: last ``images`` path component -> ``labels``, extension -> ``.txt``."""
    parts = list(Path(image_path).parts)
    for i in range(len(parts) - 2, -1, -1):  # a folder, not the file name itself
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def load_yolo(data_yaml: str | os.PathLike, split: str, name: str | None = None) -> DatasetInfo:
    """Read one split of a YOLO txt dataset (see the module docstring for the layout).

    Images: the split entry of ``data.yaml`` is a folder (searched recursively for
    :data:`IMAGE_SUFFIXES`, sorted), a ``.txt`` file listing image paths one per line (relative ones
    are taken relative to the list file's folder, as Ultralytics does for ``./`` entries), or a
    list of such entries. Image sizes come from the file headers (no decoding). Like
    :mod:`od2.data.image_io`, od2 ignores EXIF orientation: sizes and pixels are in stored order.
    Ultralytics rotates such images before normalising, so images with an EXIF orientation other
    than 1 are counted and a warning is logged (their labels may not match the stored pixels).

    Labels: each line is ``class cx cy w h`` normalised to the image size; a line with an odd number
    of at least 7 fields is an Ultralytics segmentation polygon (``class x1 y1 x2 y2 ...``) and
    becomes its bounding box. An image without a label file, or with an empty one, has no boxes
    (YOLO's background images). Boxes reaching outside ``[0, 1]`` are clipped
    (``skipped["clipped_box"]``); boxes left with no area are dropped (``skipped["degenerate_box"]``).
    YOLO has no crowd flag: ``iscrowd`` is all False. An image whose size cannot be read from its header is left out
    (``skipped["unreadable_image"]``, ``unreadable_images`` names it and the reason), so that the integrity check's
    policy (DATALOADER.BAD_IMAGES) decides about it as about any other bad image.

    Ids: image ids in ``coco_gt`` are 1-based positions in the split; category ids are ``1..K``
    (class index + 1).

    Args:
        data_yaml: the dataset's ``data.yaml``.
        split: key of ``data.yaml`` naming the images (``train``, ``val``, ``test``, ...).
        name: dataset name; default ``"{yaml stem}_{split}"`` (the folder name for ``data.yaml``).

    Raises:
        FileNotFoundError: ``data.yaml``, the split's folder or list file, or a listed image is missing.
        ValueError: a malformed ``data.yaml``, an unknown split, or a label line
            that is malformed, has an unknown class id or a non-finite number. The message names the
            file (and line).
    """
    data_yaml = Path(data_yaml)
    data, root, class_names = read_yolo_yaml(data_yaml)
    if name is None:
        stem = data_yaml.stem if data_yaml.stem not in ("data", "dataset") else data_yaml.resolve().parent.name
        name = f"{stem}_{split}"
    image_files = _list_images(data, root, split, data_yaml)

    records: list[ImageRecord] = []
    skipped = {"clipped_box": 0, "degenerate_box": 0}
    no_label_file, rotated, polygons = 0, [], 0
    unreadable: dict[str, str] = {}
    for image_id, image_file in enumerate(image_files, start=1):
        try:
            width, height, orientation = _image_size(image_file)
        except ValueError as exc:  # its size is unknown, so its labels cannot be placed: left out, as a bad image
            unreadable[str(image_file)] = str(exc.__cause__ or exc)
            continue
        if orientation not in (None, 1):
            rotated.append(image_file)
        label_file = label_path_for(image_file)
        if label_file.is_file():
            labels, norm_xyxy, num_polygons = _parse_label_file(label_file, len(class_names))
            polygons += num_polygons
        else:
            no_label_file += 1
            labels, norm_xyxy = np.zeros(0, dtype=np.int64), np.zeros((0, 4))
        # Rounding in cx -/+ w/2 must not count as clipping.
        near = (np.abs(norm_xyxy) < _NORM_EPS) | (np.abs(norm_xyxy - 1.0) < _NORM_EPS)
        norm_xyxy = np.where(near, np.round(norm_xyxy), norm_xyxy)
        xyxy = norm_xyxy * np.array([width, height, width, height], dtype=np.float64)
        cleaned = clean_boxes(xyxy, height, width, str(label_file))
        skipped["clipped_box"] += cleaned.num_clipped
        skipped["degenerate_box"] += cleaned.num_degenerate
        records.append(
            make_record(
                file_name=str(image_file),
                image_id=image_id,
                height=height,
                width=width,
                boxes=cleaned.boxes,
                labels=labels[cleaned.keep],
                iscrowd=np.zeros(len(cleaned.boxes), dtype=bool),
            )
        )

    if rotated:
        logger.warning(
            "%s: %d images carry an EXIF orientation other than 1 (e.g. %s); od2 reads pixels in stored order "
            "but Ultralytics rotates them first, so their labels may not match the stored pixels",
            name, len(rotated), rotated[0],
        )
    if unreadable:
        skipped["unreadable_image"] = len(unreadable)
        logger.warning("%s: %d images left out, their size cannot be read:\n%s", name, len(unreadable),
                       "\n".join(f"  {path}: {reason}" for path, reason in unreadable.items()))
    if polygons:
        logger.info("%s: %d segmentation polygons converted to their bounding boxes", name, polygons)
    logger.info(
        "%s: %d images (%d without a label file), %d boxes, %d classes from %s; clipped %d boxes, "
        "dropped %d degenerate",
        name, len(records), no_label_file, sum(len(r["boxes"]) for r in records), len(class_names), data_yaml,
        skipped["clipped_box"], skipped["degenerate_box"],
    )
    return DatasetInfo(
        name=name,
        records=records,
        class_names=class_names,
        category_ids=list(range(1, len(class_names) + 1)),
        coco_gt=coco_gt_from_records(records, class_names),
        skipped=skipped,
        unreadable_images=unreadable,
    )


def _list_images(data: dict[str, Any], root: Path, split: str, data_yaml: Path) -> list[Path]:
    """Absolute image paths of ``split``, in order (folders sorted, list files as written)."""
    entry = data.get(split)
    if entry is None or entry == "" or entry == []:
        splits = [k for k, v in data.items() if k not in ("path", "names", "nc", "download") and v]
        raise ValueError(f"{data_yaml}: no split {split!r} (splits present: {splits or 'none'})")
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        path = root / str(item)
        if path.is_dir():
            images += sorted(
                Path(os.path.abspath(p)) for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif path.is_file() and path.suffix.lower() == ".txt":
            images += _read_image_list(path)
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(Path(os.path.abspath(path)))
        else:
            raise FileNotFoundError(
                f"{data_yaml}: split {split!r} is {str(item)!r}, but {path} is not a folder of images, a .txt list "
                f"of image paths or an image (it does not exist; paths are relative to the dataset root {root})"
            )
    return images


def _read_image_list(list_file: Path) -> list[Path]:
    """Image paths listed in ``list_file`` (relative ones relative to its folder); each must exist."""
    images = []
    for lineno, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(os.path.abspath(list_file.parent / line))
        if not path.is_file():
            raise FileNotFoundError(f"{list_file}:{lineno}: image {line!r} not found (looked for {path})")
        images.append(path)
    return images


def _image_size(image_file: Path) -> tuple[int, int, int | None]:
    """``(width, height, EXIF orientation or None)`` from the header, in stored order (no decoding)."""
    try:
        with Image.open(image_file) as im:
            width, height = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{image_file}: cannot read the image size ({e})") from e
    return int(width), int(height), orientation


def _parse_label_file(label_file: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse a label file.

    Returns:
        labels: int64 [N]; norm_xyxy: float64 [N, 4] normalised XYXY (not clipped);
        the number of segmentation-polygon lines among them.
    """
    labels, boxes, polygons = [], [], 0
    try:
        text = label_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{label_file}: not a text file ({e})") from e
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_file}:{lineno}"
        n = len(fields)
        if n != 5 and (n < 7 or n % 2 == 0):
            raise ValueError(
                f"{where}: {n} fields in {line.strip()!r}; expected 5 (class cx cy w h) or a segmentation polygon "
                "(class x1 y1 x2 y2 x3 y3 ...)"
            )
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise ValueError(f"{where}: non-numeric field in {line.strip()!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{where}: non-finite number in {line.strip()!r}")
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise ValueError(
                f"{where}: class id {fields[0]!r} is not one of the {num_classes} classes 0..{num_classes - 1} "
                "named in data.yaml"
            )
        if n == 5:
            cx, cy, w, h = values[1:]
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        else:
            xs, ys = values[1::2], values[2::2]
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
            polygons += 1
        labels.append(int(cls))
    return np.array(labels, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4), polygons
