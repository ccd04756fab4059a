"""Write a :class:`DatasetInfo` as a COCO json, a VOC split or a YOLO split, and read any of the three.

``read_dataset(fmt, ...)`` loads COCO / VOC / YOLO; ``write_coco``, ``write_voc`` and ``write_yolo``
write one split so that reading it back gives the same records: the same images (sizes), boxes
(within 1e-3 px), labels and class names. What each format cannot hold:

- **Category ids.** ``write_coco`` keeps ``info.category_ids`` (a COCO source keeps its ids, e.g.
  COCO's 1..90). VOC (class names) and YOLO (class index) have no ids; their loaders number
  categories ``1..K`` in label order, so a trip through VOC or YOLO renumbers ids to ``1..K``.
- **Crowd / difficult.** COCO ``iscrowd`` and VOC ``<difficult>`` are the same flag in od2
  (``iscrowd``) and map onto each other. YOLO has no such flag: ``write_yolo`` drops crowd boxes
  (as Ultralytics' own COCO and VOC converters do), counting them in ``WriteSummary.dropped`` and
  logging the count; ``keep_crowd=True`` writes them as ordinary boxes instead.
- **Image ids.** ``write_coco`` keeps record image ids when they are unique (else renumbers
  ``1..N``); VOC and YOLO loaders number images ``1..N`` in split order.
- **Class order in VOC.** VOC has no class list; ``write_voc`` writes ``class_names.txt`` (one name
  per line, label order) in the VOC root, and :func:`read_dataset` uses it when present, so
  labels, class order and classes without boxes survive. (Without it od2's VOC loader sorts the
  names found in the xml files.)
- **Tiny VOC boxes.** VOC coordinates are 1-based inclusive pixels: XYXY ``(x1, y1, x2, y2)`` is
  written as ``xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2`` (the inverse of od2's VOC
  loader), integers when integral, else up to 4 decimals. A box at most 1 px wide or high comes
  out with ``xmax <= xmin``, which od2's VOC loader reads as a click and drops; such boxes are
  still written, counted in ``WriteSummary.warnings`` and logged.

File names: images are copied (or hard-linked / symlinked, ``link=``) into the output under their
own file name. Two images whose names clash (the same stem, compared case-insensitively, e.g.
``a/x.jpg`` and ``b/x.jpg``, or ``x.jpg`` and ``x.png``: VOC and YOLO key annotations by stem) are
not overwritten: later ones are renamed ``{stem}_1``, ``{stem}_2``, ... (whitespace in stems
becomes ``_``, as VOC split files are whitespace-separated); the count is logged and returned in
``WriteSummary.renamed``. Existing output files are an error unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from od2.data.datasets.coco import load_coco_json
from od2.data.datasets.voc import CLASS_NAMES_FILE, load_voc, read_class_names_file
from od2.data.datasets.yolo import IMAGE_SUFFIXES, load_yolo, read_yolo_yaml
from od2.data.records import DatasetInfo, ImageRecord

__all__ = [
    "FORMATS",
    "LINK_MODES",
    "VOC_CLASS_NAMES_FILE",
    "WriteSummary",
    "coco_output_paths",
    "read_dataset",
    "read_voc_class_names",
    "write_coco",
    "write_dataset",
    "write_voc",
    "write_yolo",
]

logger = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "yolo")
#: How images reach the output: copied, hard-linked (copied where the file system refuses) or symlinked.
LINK_MODES = ("copy", "hardlink", "symlink")
VOC_CLASS_NAMES_FILE = CLASS_NAMES_FILE
read_voc_class_names = read_class_names_file  # {voc_root}/class_names.txt, or None without it


@dataclasses.dataclass
class WriteSummary:
    """What a writer did.

    Attributes:
        format: ``"coco"``, ``"voc"`` or ``"yolo"``.
        path: the main output (the COCO json, the VOC root, the YOLO data.yaml).
        num_images, num_boxes: images and boxes written.
        dropped: boxes not written, by reason (``{"crowd_box": 3}`` for YOLO).
        warnings: boxes written that a reader may not keep, by reason.
        renamed: images written under a new name to avoid a clash.
        image_files: how the image files were placed: ``copied``, ``hardlinked``, ``symlinked``,
            ``kept`` (the output already is the source file), ``referenced`` (COCO json without an
            image folder: absolute paths, nothing placed).
    """

    format: str
    path: Path
    num_images: int
    num_boxes: int
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    warnings: dict[str, int] = dataclasses.field(default_factory=dict)
    renamed: int = 0
    image_files: dict[str, int] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------- reading


def coco_output_paths(out_root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """Where :func:`write_dataset` puts a COCO split: ``(out/annotations/instances_{split}.json, out/{split}/)``."""
    out_root = Path(out_root)
    return out_root / "annotations" / f"instances_{split}.json", out_root / split


def read_dataset(
    fmt: str,
    path: str | os.PathLike,
    split: str | None = None,
    image_root: str | os.PathLike | None = None,
    name: str | None = None,
) -> DatasetInfo:
    """Load a dataset in any supported format.

    Args:
        fmt: ``"coco"`` (``path`` = the json), ``"voc"`` (``path`` = the VOC root) or ``"yolo"``
            (``path`` = the data.yaml, or a folder holding ``data.yaml``).
        split: VOC split / YOLO split key (default ``train``); unused for COCO.
        image_root: COCO only: the folder image ``file_name`` entries are relative to. Default: the
            first folder of :func:`od2.data.datasets.coco.coco_image_root_candidates` that holds the json's
            first image (``.../{S}/`` for ``.../annotations/instances_{S}.json``, the layout
            :func:`write_dataset` writes, comes first).
        name: dataset name (default: the loader's).

    Raises:
        ValueError: unknown format; the loaders' errors (FileNotFoundError, ValueError) pass through.
    """
    path = Path(path)
    if fmt == "coco":
        return load_coco_json(path, image_root, name=name)
    if fmt == "voc":
        if not path.is_dir():
            raise FileNotFoundError(f"VOC root {path} is not a folder (expected Annotations/, ImageSets/Main/, ...)")
        return load_voc(path, split or "train", name=name)  # load_voc reads class_names.txt
    if fmt == "yolo":
        if path.is_dir():
            path = path / "data.yaml"
        return load_yolo(path, split or "train", name=name)
    raise ValueError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")


# ----------------------------------------------------------------------------- writing


def write_dataset(
    info: DatasetInfo,
    fmt: str,
    out_root: str | os.PathLike,
    split: str,
    *,
    link: str = "copy",
    overwrite: bool = False,
    keep_crowd: bool = False,
) -> WriteSummary:
    """Write ``info`` as split ``split`` of a dataset in ``fmt`` under the folder ``out_root``.

    COCO: ``out_root/annotations/instances_{split}.json`` with the images in ``out_root/{split}/``;
    VOC: :func:`write_voc`; YOLO: :func:`write_yolo`. ``keep_crowd`` is for YOLO only.
    """
    if fmt == "coco":
        json_file, image_dir = coco_output_paths(out_root, split)
        return write_coco(info, json_file, image_dir=image_dir, link=link, overwrite=overwrite)
    if fmt == "voc":
        return write_voc(info, out_root, split, link=link, overwrite=overwrite)
    if fmt == "yolo":
        return write_yolo(info, out_root, split, link=link, overwrite=overwrite, keep_crowd=keep_crowd)
    raise ValueError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")


def write_coco(
    info: DatasetInfo,
    out_json: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    *,
    link: str = "copy",
    overwrite: bool = False,
) -> WriteSummary:
    """Write ``info`` as a COCO instances json.

    With ``image_dir`` the images are copied (or linked, ``link``) into it and ``file_name`` is the
    name inside it (load with ``image_root=image_dir``). Without it no image is copied and
    ``file_name`` is each image's absolute path (any ``image_root`` then loads it).

    ``bbox`` is ``[x, y, w, h]`` from the float32 boxes (exact), ``area`` = ``w * h``, ``iscrowd`` =
    the crowd/difficult flag; category ids are ``info.category_ids``; annotation ids ``1..M``.

    Raises:
        FileNotFoundError: an image file is missing (with ``image_dir``).
        FileExistsError: an output file exists and ``overwrite`` is False.
    """
    _check_link(link)
    out_json = Path(out_json)
    records = info.records
    summary = WriteSummary("coco", out_json, len(records), 0)
    if image_dir is not None:
        image_dir = Path(image_dir)
        names, summary.renamed = _unique_image_names(records)
        image_targets = [image_dir / n for n in names]
        file_names = names
    else:
        image_targets = []
        file_names = [os.path.abspath(r["file_name"]) for r in records]
    _check_outputs(records, image_targets, [out_json], overwrite)

    image_ids = [r["image_id"] for r in records]
    if len(set(image_ids)) != len(image_ids):
        logger.warning("%s: image ids repeat (merged datasets?); writing ids 1..%d instead", info.name, len(records))
        image_ids = list(range(1, len(records) + 1))
    images, annotations = [], []
    for r, image_id, file_name in zip(records, image_ids, file_names):
        images.append({"id": image_id, "file_name": file_name, "height": r["height"], "width": r["width"]})
        for (x1, y1, x2, y2), label, crowd in zip(
            r["boxes"].astype(np.float64).tolist(), r["labels"].tolist(), r["iscrowd"].tolist()
        ):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": info.category_ids[label],
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
    source_categories = {c.get("id"): c for c in info.coco_gt.get("categories", []) if isinstance(c, dict)}
    categories = []
    for cid, cname in zip(info.category_ids, info.class_names):
        category = {"id": cid, "name": cname}
        if "supercategory" in source_categories.get(cid, {}):
            category["supercategory"] = source_categories[cid]["supercategory"]
        categories.append(category)
    summary.num_boxes = len(annotations)

    if image_dir is not None:
        summary.image_files = _place_images(records, image_targets, link)
    else:
        summary.image_files = {"referenced": len(records)}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    _log_summary(info, summary)
    return summary


def write_voc(
    info: DatasetInfo,
    out_root: str | os.PathLike,
    split: str,
    *,
    link: str = "copy",
    overwrite: bool = False,
) -> WriteSummary:
    """Write ``info`` as split ``split`` of a VOC-layout dataset.

    Writes ``Annotations/{stem}.xml``, the images to ``JPEGImages/``, ``ImageSets/Main/{split}.txt``
    and ``class_names.txt``. Several splits can share one root (write them one after another; the
    class names must agree). Coordinates: see the module docstring.

    Raises:
        FileNotFoundError: an image file is missing.
        FileExistsError: an output file exists and ``overwrite`` is False.
        ValueError: two classes share a name (VOC names classes), or ``class_names.txt`` in
            ``out_root`` lists other classes.
    """
    _check_link(link)
    out_root = Path(out_root)
    records = info.records
    duplicated = [n for n, c in Counter(info.class_names).items() if c > 1]
    if duplicated:
        raise ValueError(f"{info.name}: class name {duplicated[0]!r} is used twice; VOC identifies classes by name")
    existing = read_voc_class_names(out_root)
    if existing is not None and existing != list(info.class_names):
        raise ValueError(
            f"{out_root / VOC_CLASS_NAMES_FILE} lists classes {existing}, but {info.name} has {info.class_names}; "
            "write to another folder"
        )
    names, renamed = _unique_image_names(records)
    stems = [Path(n).stem for n in names]
    image_targets = [out_root / "JPEGImages" / n for n in names]
    xml_files = [out_root / "Annotations" / f"{s}.xml" for s in stems]
    split_file = out_root / "ImageSets" / "Main" / f"{split}.txt"
    _check_outputs(records, image_targets, [*xml_files, split_file], overwrite)

    summary = WriteSummary("voc", out_root, len(records), 0, renamed=renamed)
    tiny = 0
    xml_texts = []
    for r, file_name in zip(records, names):
        xml_texts.append(_voc_xml(r, file_name, info.class_names))
        wh = r["boxes"][:, 2:] - r["boxes"][:, :2]
        tiny += int((wh <= 1.0).any(axis=1).sum())
        summary.num_boxes += len(r["boxes"])
    if tiny:
        summary.warnings["box_at_most_1px"] = tiny
        logger.warning(
            "%s: %d boxes are at most 1 px wide or high; in VOC's 1-based inclusive pixels they get xmax <= xmin, "
            "which od2's VOC loader drops as clicks", info.name, tiny,
        )

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out_root / sub).mkdir(parents=True, exist_ok=True)
    summary.image_files = _place_images(records, image_targets, link)
    for xml_file, text in zip(xml_files, xml_texts):
        xml_file.write_text(text, encoding="utf-8")
    split_file.write_text("".join(f"{s}\n" for s in stems))
    (out_root / VOC_CLASS_NAMES_FILE).write_text("".join(f"{n}\n" for n in info.class_names), encoding="utf-8")
    _log_summary(info, summary)
    return summary


def write_yolo(
    info: DatasetInfo,
    out_root: str | os.PathLike,
    split: str,
    *,
    link: str = "copy",
    overwrite: bool = False,
    keep_crowd: bool = False,
) -> WriteSummary:
    """Write ``info`` as split ``split`` of a YOLO (Ultralytics) dataset.

    Writes the images to ``images/{split}/``, one ``labels/{split}/{stem}.txt`` per image (empty for
    images without boxes) with ``class cx cy w h`` lines normalised to the image size (10 decimals),
    and ``data.yaml`` (``{split}: images/{split}``, ``nc``, ``names`` as ``{index: name}``; no
    ``path``, so the yaml's folder is the root). An existing ``data.yaml`` with the same names gets
    the split added, so several splits can share one root.

    Crowd boxes: dropped and counted (``dropped["crowd_box"]``) unless ``keep_crowd``; see the module
    docstring.

    Raises:
        FileNotFoundError: an image file is missing.
        FileExistsError: an output file exists and ``overwrite`` is False.
        ValueError: an existing ``data.yaml`` names other classes, or an image has a size of 0.
    """
    _check_link(link)
    out_root = Path(out_root)
    records = info.records
    data_yaml = out_root / "data.yaml"
    data: dict[str, Any] = {}
    if data_yaml.exists():
        data, _, existing = read_yolo_yaml(data_yaml)
        if existing != list(info.class_names):
            raise ValueError(
                f"{data_yaml} names classes {existing}, but {info.name} has {info.class_names}; write to another folder"
            )
    names, renamed = _unique_image_names(records)
    image_targets = [out_root / "images" / split / n for n in names]
    label_files = [out_root / "labels" / split / f"{Path(n).stem}.txt" for n in names]
    _check_outputs(records, image_targets, label_files, overwrite)

    summary = WriteSummary("yolo", data_yaml, len(records), 0, renamed=renamed)
    texts, crowd = [], 0
    for r in records:
        if r["width"] <= 0 or r["height"] <= 0:
            raise ValueError(f"{r['file_name']}: image size {r['width']}x{r['height']} cannot normalise boxes")
        keep = np.ones(len(r["boxes"]), dtype=bool) if keep_crowd else ~r["iscrowd"]
        crowd += int((~keep).sum())
        boxes = r["boxes"][keep].astype(np.float64)
        w, h = float(r["width"]), float(r["height"])
        lines = []
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), r["labels"][keep].tolist()):
            values = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
            lines.append(" ".join([str(label), *(_fmt(v, 10) for v in values)]) + "\n")
        summary.num_boxes += len(lines)
        texts.append("".join(lines))
    if crowd:
        summary.dropped["crowd_box"] = crowd
        logger.warning(
            "%s: YOLO has no crowd/difficult flag; dropped %d crowd/difficult boxes (keep_crowd=True / --keep-crowd "
            "writes them as ordinary boxes)", info.name, crowd,
        )

    (out_root / "images" / split).mkdir(parents=True, exist_ok=True)
    (out_root / "labels" / split).mkdir(parents=True, exist_ok=True)
    summary.image_files = _place_images(records, image_targets, link)
    for label_file, text in zip(label_files, texts):
        label_file.write_text(text)
    data.pop("path", None)
    data[split] = f"images/{split}"
    data["nc"] = len(info.class_names)
    data["names"] = dict(enumerate(info.class_names))
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    _log_summary(info, summary)
    return summary


# ----------------------------------------------------------------------------- helpers


def _fmt(value: float, decimals: int) -> str:
    """``value`` with at most ``decimals`` decimals, trailing zeros removed (``3.0`` -> ``3``)."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _voc_xml(record: ImageRecord, file_name: str, class_names: Sequence[str]) -> str:
    """The VOC annotation xml of one record (1-based inclusive coordinates, 4 decimals at most)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", record["width"]), ("height", record["height"]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for (x1, y1, x2, y2), label, crowd in zip(
        record["boxes"].astype(np.float64).tolist(), record["labels"].tolist(), record["iscrowd"].tolist()
    ):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[label]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(crowd))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bndbox, tag).text = _fmt(value, 4)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _unique_image_names(records: Sequence[ImageRecord]) -> tuple[list[str], int]:
    """Output file names: the source name, whitespace -> ``_``, clashing stems renamed ``{stem}_{k}``.

    Returns:
        the names (in record order) and how many differ from the source name.
    """
    sources = [Path(r["file_name"]) for r in records]
    for src in sources:
        if src.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{src}: unsupported image file suffix {src.suffix!r} (expected one of {', '.join(IMAGE_SUFFIXES)})"
            )
    stems = [re.sub(r"\s+", "_", src.stem) for src in sources]
    originals = {s.lower() for s in stems}
    taken: set[str] = set()
    names, renamed = [], 0
    for src, stem in zip(sources, stems):
        if stem.lower() in taken:
            k = 1
            while f"{stem}_{k}".lower() in taken or f"{stem}_{k}".lower() in originals:
                k += 1
            stem = f"{stem}_{k}"
        taken.add(stem.lower())
        name = stem + src.suffix
        renamed += name != src.name
        names.append(name)
    if renamed:
        logger.warning("%d images are written under a new name to avoid a file name clash, e.g. %s",
                       renamed, next(f"{s} -> {n}" for s, n in zip(sources, names) if n != s.name))
    return names, renamed


def _check_link(link: str) -> None:
    if link not in LINK_MODES:
        raise ValueError(f"link={link!r}; expected one of {', '.join(LINK_MODES)}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_outputs(
    records: Sequence[ImageRecord], image_targets: Sequence[Path], other_targets: Sequence[Path], overwrite: bool
) -> None:
    """Fail before writing anything: a source image is missing, or (without ``overwrite``) a target exists."""
    missing = [r["file_name"] for r in records if image_targets and not os.path.isfile(r["file_name"])]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image files do not exist, e.g. {missing[0]}")
    if overwrite:
        return
    existing = [t for r, t in zip(records, image_targets) if t.exists() and not _same_file(r["file_name"], t)]
    existing += [t for t in other_targets if t.exists()]
    if existing:
        raise FileExistsError(
            f"{len(existing)} output files exist already, e.g. {existing[0]}; choose another output folder or "
            "pass overwrite=True (--overwrite)"
        )


def _place_images(records: Sequence[ImageRecord], targets: Sequence[Path], link: str) -> dict[str, int]:
    """Copy / hard-link / symlink each record's image to its target; returns counts by how."""
    counts: Counter[str] = Counter()
    for r, target in zip(records, targets):
        src = Path(r["file_name"])
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            if _same_file(src, target):
                counts["kept"] += 1
                continue
            target.unlink()
        if link == "symlink":
            os.symlink(os.path.abspath(src), target)
            counts["symlinked"] += 1
            continue
        if link == "hardlink":
            try:
                os.link(src, target)
                counts["hardlinked"] += 1
                continue
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
        shutil.copyfile(src, target)
        counts["copied"] += 1
    if link == "hardlink" and counts["copied"]:
        logger.warning("%d images were copied: the file system refused hard links", counts["copied"])
    return dict(counts)


def _log_summary(info: DatasetInfo, summary: WriteSummary) -> None:
    logger.info(
        "%s -> %s %s: %d images, %d boxes; images %s; dropped %s; renamed %d",
        info.name, summary.format, summary.path, summary.num_images, summary.num_boxes, summary.image_files,
        summary.dropped or "none", summary.renamed,
    )
