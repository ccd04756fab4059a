"""Load a Pascal VOC style dataset (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/*.txt``)."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from od2.data.records import DatasetInfo, ImageRecord, clean_boxes, coco_gt_from_records, make_record

__all__ = ["CLASS_NAMES_FILE", "load_voc", "read_class_names_file"]

logger = logging.getLogger(__name__)

CLASS_NAMES_FILE = "class_names.txt"
# A class with fewer boxes than this share of the most common class's (or a single box) is reported as a likely
# typo: VOC names classes in every xml file, so a misspelt name becomes a class of its own.
RARE_CLASS_SHARE = 0.01
_warned_class_lists: set[tuple[str, tuple[str, ...]]] = set()


@dataclasses.dataclass(frozen=True)
class _VocAnnotation:
    """The parts of one VOC xml file od2 uses.

    Attributes:
        filename: the ``<filename>`` entry ("" when absent).
        width, height: the ``<size>`` entry (0 when absent).
        names: [N] object class names.
        boxes: float64 [N, 4] ``xmin, ymin, xmax, ymax`` as written (1-based, inclusive).
        difficult: bool [N].
    """

    filename: str
    width: int
    height: int
    names: list[str]
    boxes: np.ndarray
    difficult: np.ndarray


def load_voc(
    voc_root: str | os.PathLike,
    split: str,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> DatasetInfo:
    """Read one split of a VOC-layout dataset.

    Layout: ``{voc_root}/ImageSets/Main/{split}.txt`` lists image ids; ``Annotations/{id}.xml``
    holds the boxes; the image is ``JPEGImages/{id}`` plus the suffix of the xml's
    ``<filename>`` (``.jpg`` when absent).

    Coordinates: VOC pixel indices are 1-based and inclusive. Like detectron2, ``xmin - 1`` and
    ``ymin - 1`` become the XYXY minimum and ``xmax``, ``ymax`` are kept, so a box covering pixels
    1..10 spans ``[0, 10)``. A box with ``xmax <= xmin`` or ``ymax <= ymin`` as written (a click,
    not a drawn box; BCCD has two) is dropped and counted in ``skipped["degenerate_box"]``, as is
    one left with no area after clipping; boxes reaching outside the image are clipped and
    counted in ``skipped["clipped_box"]``. ``difficult`` objects are kept with ``iscrowd=True``,
    so COCO evaluation ignores detections matched to them, as VOC evaluation does.

    Class names: ``class_names`` if given (label = position), else the names listed in
    ``{voc_root}/class_names.txt`` (one per line, label order; ``od2 data convert --to voc`` writes it),
    else the sorted set of names in all xml files under ``Annotations/``, so every split of a dataset
    gets the same labels. Discovered names are checked: a class with very few boxes (under
    ``RARE_CLASS_SHARE`` of the most common class's, or a single one) or with boxes in only one of
    several splits is logged as a warning once per folder, naming the class it resembles.
    Image ids in ``coco_gt`` are 1-based positions in the split file; category ids are ``1..K``.

    Args:
        name: dataset name; default ``"{voc_root folder name}_{split}"``.

    Raises:
        FileNotFoundError: the split file or an xml file listed in it is missing.
        ValueError: an xml file is malformed, lacks a required element, or (when ``class_names``
            is given or read from ``class_names.txt``) names an unknown class; ``class_names.txt``
            lists a name twice. The message names the file.
    """
    voc_root = Path(voc_root)
    name = name if name is not None else f"{voc_root.name}_{split}"
    image_ids = _read_split(voc_root, split)
    ann_dir = voc_root / "Annotations"
    parsed: dict[str, _VocAnnotation] = {}
    if class_names is None:
        class_names = read_class_names_file(voc_root)
    if class_names is None:
        parsed = {p.stem: _parse_xml(p) for p in sorted(ann_dir.glob("*.xml"))}
        class_names = sorted({n for ann in parsed.values() for n in ann.names})
        _warn_about_suspect_classes(voc_root, parsed, class_names)
    class_names = list(class_names)
    label_of = {n: k for k, n in enumerate(class_names)}

    records: list[ImageRecord] = []
    skipped = {"clipped_box": 0, "degenerate_box": 0}
    for image_id, stem in enumerate(image_ids, start=1):
        xml_file = ann_dir / f"{stem}.xml"
        ann = parsed[stem] if stem in parsed else _parse_xml(xml_file)
        record, num_clipped, num_degenerate = _make_voc_record(
            voc_root, stem, image_id, ann, xml_file, label_of
        )
        records.append(record)
        skipped["clipped_box"] += num_clipped
        skipped["degenerate_box"] += num_degenerate

    logger.info(
        "%s: %d images, %d boxes, %d classes from %s; clipped %d boxes, dropped %d degenerate",
        name,
        len(records),
        sum(len(r["boxes"]) for r in records),
        len(class_names),
        voc_root,
        skipped["clipped_box"],
        skipped["degenerate_box"],
    )
    return DatasetInfo(
        name=name,
        records=records,
        class_names=class_names,
        category_ids=list(range(1, len(class_names) + 1)),
        coco_gt=coco_gt_from_records(records, class_names),
        skipped=skipped,
    )


def read_class_names_file(voc_root: str | os.PathLike) -> list[str] | None:
    """The class names in ``{voc_root}/class_names.txt`` (one per line, label order), or None without it."""
    path = Path(voc_root) / CLASS_NAMES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise ValueError(f"{path}: {twice[0]!r} is listed twice")
    return names


def _warn_about_suspect_classes(voc_root: Path, parsed: dict[str, _VocAnnotation], class_names: list[str]) -> None:
    """Warn (once per folder and class list) about discovered classes that look like typos: very few boxes, or
    boxes in one split only."""
    key = (os.path.realpath(voc_root), tuple(class_names))
    if key in _warned_class_lists or not class_names:
        return
    _warned_class_lists.add(key)
    boxes = Counter(name for ann in parsed.values() for name in ann.names)
    most_common, most = boxes.most_common(1)[0]
    classes_in_split = {split: {name for stem in stems if stem in parsed for name in parsed[stem].names}
                        for split, stems in _split_lists(voc_root, class_names).items()}
    for name in class_names:
        problems = []
        if boxes[name] < RARE_CLASS_SHARE * most or boxes[name] == 1 < most:
            problems.append(f"{boxes[name]} box{'es' if boxes[name] > 1 else ''} ({most_common!r} has {most})")
        holding = [split for split, names in classes_in_split.items() if name in names]
        if len(holding) == 1 and len(classes_in_split) > 1:
            others = ", ".join(split for split in classes_in_split if split != holding[0])
            problems.append(f"boxes only in split {holding[0]} (none in {others})")
        if problems:
            close = difflib.get_close_matches(name, [n for n in class_names if n != name], n=1, cutoff=0.6)
            logger.warning(
                "%s: class %r has %s%s. VOC names a class in each xml file, so a misspelt name becomes a class of "
                "its own: correct the xml files, or fix the class list in %s (one name per line) or with "
                "register_voc(..., class_names=[...])", voc_root / "Annotations", name, " and ".join(problems),
                f" (a typo of {close[0]!r}?)" if close else "", voc_root / CLASS_NAMES_FILE)


def _split_lists(voc_root: Path, class_names: list[str]) -> dict[str, list[str]]:
    """Split name -> image ids for every split file in ``ImageSets/Main`` (VOC's per-class lists such as
    ``dog_train.txt`` left out)."""
    per_class = tuple(f"{name}_" for name in class_names)
    files = sorted((voc_root / "ImageSets" / "Main").glob("*.txt"))
    return {f.stem: _read_split(voc_root, f.stem) for f in files if not f.stem.startswith(per_class)}


def _read_split(voc_root: Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/{split}.txt`` (one per line, blank lines ignored)."""
    split_file = voc_root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in split_file.parent.glob("*.txt"))
        raise FileNotFoundError(
            f"VOC split {split!r} not found: expected {split_file} (splits present: {available or 'none'})"
        )
    # A line may carry a second column (VOC per-class files); the id is the first.
    return [line.split()[0] for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _parse_xml(xml_file: Path) -> _VocAnnotation:
    """Parse one VOC annotation file; errors name the file."""
    try:
        root = ET.parse(xml_file).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{xml_file}: malformed XML ({e})") from e
    names, boxes, difficult = [], [], []
    top = f"/{root.tag}"
    for i, obj in enumerate(root.findall("object")):
        where = f"{top}/object[{i + 1}]"  # an XPath (1-based) to the element: ElementTree keeps no line numbers
        names.append(_text(obj, "name", xml_file, where).strip())
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{xml_file}: {where} ({names[-1]!r}) has no <bndbox>")
        boxes.append([_number(bndbox, k, xml_file, f"{where}/bndbox") for k in ("xmin", "ymin", "xmax", "ymax")])
        has_difficult = obj.find("difficult") is not None
        difficult.append(has_difficult and _number(obj, "difficult", xml_file, where) != 0)
    size = root.find("size")
    return _VocAnnotation(
        filename=(root.findtext("filename") or "").strip(),
        width=int(_number(size, "width", xml_file, f"{top}/size")) if size is not None else 0,
        height=int(_number(size, "height", xml_file, f"{top}/size")) if size is not None else 0,
        names=names,
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        difficult=np.array(difficult, dtype=bool),
    )


def _text(element: ET.Element, tag: str, xml_file: Path, where: str) -> str:
    """Text of the child ``tag`` of ``element``, or a ValueError naming the file and ``where`` (the element path)."""
    text = element.findtext(tag)
    if text is None:
        raise ValueError(f"{xml_file}: {where} has no <{tag}>")
    return text


def _number(element: ET.Element, tag: str, xml_file: Path, where: str) -> float:
    """The child ``tag`` of ``element`` as a finite number, or a ValueError naming the file and the element path."""
    text = _text(element, tag, xml_file, where)
    try:
        value = float(text)
    except ValueError as e:
        raise ValueError(f"{xml_file}: {where}/{tag} is {text!r}, not a number") from e
    if not math.isfinite(value):  # a NaN box would compare as not drawn and vanish without a word
        raise ValueError(f"{xml_file}: {where}/{tag} is {text!r}, not a finite number")
    return value


def _make_voc_record(
    voc_root: Path,
    stem: str,
    image_id: int,
    ann: _VocAnnotation,
    xml_file: Path,
    label_of: dict[str, int],
) -> tuple[ImageRecord, int, int]:
    """Convert one parsed xml to a record; returns ``(record, num_clipped, num_degenerate)``."""
    unknown = [i for i, n in enumerate(ann.names) if n not in label_of]
    if unknown:
        first = unknown[0]
        raise ValueError(f"{xml_file}: /annotation/object[{first + 1}]: class name {ann.names[first]!r} is not in "
                         f"class_names {list(label_of)}")
    suffix = Path(ann.filename).suffix or ".jpg"
    file_name = os.path.abspath(voc_root / "JPEGImages" / f"{stem}{suffix}")
    width, height = ann.width, ann.height
    if width <= 0 or height <= 0:
        # Some VOC-style exports write <size> as 0 or leave it out; the image header has it.
        with Image.open(file_name) as im:
            width, height = im.size

    raw = ann.boxes
    drawn = (raw[:, 2] > raw[:, 0]) & (raw[:, 3] > raw[:, 1])
    xyxy = raw[drawn] - np.array([1.0, 1.0, 0.0, 0.0])
    cleaned = clean_boxes(xyxy, height, width, str(xml_file))
    keep = np.flatnonzero(drawn)[cleaned.keep]
    record = make_record(
        file_name=file_name,
        image_id=image_id,
        height=height,
        width=width,
        boxes=cleaned.boxes,
        labels=[label_of[ann.names[i]] for i in keep],
        iscrowd=ann.difficult[keep],
    )
    return record, cleaned.num_clipped, int((~drawn).sum()) + cleaned.num_degenerate
