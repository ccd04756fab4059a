"""The dataset catalog: dataset names (``coco_2017_val``, ``bccd_test``, ``digits_train``, and
user registrations) resolved to a :class:`DatasetInfo`.

Built-in datasets live under a datasets root: the ``root`` argument, else ``$OD2_DATASETS``,
else ``./datasets``. The layout follows detectron2::

    {root}/coco/annotations/instances_{train,val}2017.json     {root}/coco/{train,val}2017/
    {root}/coco/annotations/instances_train2014.json           {root}/coco/train2014/
    {root}/coco/annotations/instances_{val,minival,valminusminival}2014.json  {root}/coco/val2014/
    {root}/bccd/{Annotations,ImageSets,JPEGImages}/            (VOC layout)
    {root}/digits/                                             (generated on first use)

User datasets: :func:`register_coco_instances`, :func:`register_voc` and :func:`register_yolo`
give a COCO json, a VOC split or a YOLO split a name. They can also be named by path, without
registering (so from the command line and in configs)::

    coco:ANNOTATIONS.json[:IMAGE_DIR]   e.g. coco:datasets/pets/annotations/instances_train.json
    voc:ROOT:SPLIT                      e.g. voc:datasets/BCCD:train  (ROOT/ImageSets/Main/SPLIT.txt)
    yolo:PATH/data.yaml:SPLIT           e.g. yolo:datasets/pets/data.yaml:val

    DATASETS:
      TRAIN: ["voc:datasets/BCCD:train"]
      TEST: ["voc:datasets/BCCD:test"]

A relative path is looked up from the current directory, then under the datasets root. Without
IMAGE_DIR a COCO json's images are looked for as
:func:`od2.data.datasets.coco.coco_image_root_candidates` says. ``voc:`` and ``yolo:`` take the
split after the last ``:``; a ``coco:`` path may not hold a ``:``. See docs/datasets.md.

Parsed datasets are cached per (name, root) for the life of the process; callers share the
cached object and must not modify it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from od2.data.datasets.coco import load_coco_json
from od2.data.datasets.digits import load_digits_split
from od2.data.datasets.voc import load_voc
from od2.data.datasets.yolo import load_yolo
from od2.data.records import DatasetInfo, merge_datasets

__all__ = [
    "DATASETS_ENV",
    "DatasetNotFoundError",
    "default_root",
    "get_dataset",
    "list_datasets",
    "register_coco_instances",
    "register_voc",
    "register_yolo",
]

DATASETS_ENV = "OD2_DATASETS"
COCO_PREFIX = "coco:"
VOC_PREFIX = "voc:"
YOLO_PREFIX = "yolo:"
BCCD_CLASSES = ("Platelets", "RBC", "WBC")

# name -> (image folder, annotation file) pairs under {root}/coco; several pairs are merged.
_COCO_SPLITS: dict[str, tuple[tuple[str, str], ...]] = {
    "coco_2014_train": (
        ("train2014", "instances_train2014.json"),
        ("val2014", "instances_valminusminival2014.json"),
    ),
    "coco_2014_minival": (("val2014", "instances_minival2014.json"),),
    "coco_2014_val": (("val2014", "instances_val2014.json"),),
    "coco_2017_train": (("train2017", "instances_train2017.json"),),
    "coco_2017_val": (("val2017", "instances_val2017.json"),),
}
_BCCD_SPLITS = ("train", "val", "test", "trainval")
_DIGITS_SPLITS = ("train", "val")

_Loader = Callable[[Path], DatasetInfo]  # datasets root -> dataset
_registered: dict[str, _Loader] = {}
_cache: dict[tuple[str, str], DatasetInfo] = {}


class DatasetNotFoundError(KeyError):
    """An unknown dataset name. (A KeyError whose message prints without quotes.)"""

    def __str__(self) -> str:
        return str(self.args[0])


def default_root() -> Path:
    """The datasets root used when none is given: ``$OD2_DATASETS``, else ``./datasets``."""
    return Path(os.environ.get(DATASETS_ENV) or "datasets")


def get_dataset(name: str, root: str | os.PathLike | None = None) -> DatasetInfo:
    """Load the dataset ``name`` (cached per name and root).

    Args:
        name: a built-in name (see :func:`list_datasets`), one registered with
            :func:`register_coco_instances` / :func:`register_voc` / :func:`register_yolo`, or
            a dataset named by path: ``"coco:ANNOTATIONS.json[:IMAGE_DIR]"``, ``"voc:ROOT:SPLIT"`` or
            ``"yolo:PATH/data.yaml:SPLIT"`` (see the module docstring).
        root: datasets root for built-in datasets and relative paths (registered ones ignore it);
            default :func:`default_root`.

    Raises:
        DatasetNotFoundError: unknown name, or a path name without its parts (``:SPLIT``); the
            message suggests close matches or shows the form.
        FileNotFoundError: the dataset's files are missing; the message names the expected path.
    """
    path_loader = _PATH_NAMES.get(name.split(":", 1)[0] + ":") if ":" in name else None
    if path_loader is not None and name not in _registered:
        key, load = path_loader(name, root)
        if key not in _cache:
            _cache[key] = load()
        return _cache[key]
    if name in _BUILTINS:
        root_path = Path(root) if root is not None else default_root()
        key = (name, os.path.abspath(root_path))
        loader = _BUILTINS[name]
    elif name in _registered:
        root_path, key, loader = Path(), (name, ""), _registered[name]
    else:
        known = list_datasets()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise DatasetNotFoundError(f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(known)}")
    if key not in _cache:
        _cache[key] = loader(root_path)
    return _cache[key]


def list_datasets() -> list[str]:
    """All dataset names :func:`get_dataset` accepts, built-in and registered, sorted."""
    return sorted([*_BUILTINS, *_registered])


def register_coco_instances(name: str, json_file: str | os.PathLike, image_root: str | os.PathLike) -> None:
    """Make a COCO-format dataset available as ``get_dataset(name)``.

    Relative paths are taken relative to the current directory at registration time.
    Files are read on first use.

    Raises:
        ValueError: ``name`` is already taken.
    """
    json_file, image_root = Path(os.path.abspath(json_file)), Path(os.path.abspath(image_root))

    def load(_: Path) -> DatasetInfo:
        layout = f"  {json_file}\n  {image_root}/ (the folder that image file_name entries are relative to)"
        _require_path(name, json_file, layout)
        _require_path(name, image_root, layout)
        return load_coco_json(json_file, image_root, name=name)

    _register(name, load)


def register_voc(
    name: str, voc_root: str | os.PathLike, split: str, class_names: Sequence[str] | None = None
) -> None:
    """Make one split of a VOC-layout dataset available as ``get_dataset(name)``.

    ``class_names`` fixes the labels (label = position) for the splits registered with it; by
    default they come from ``{voc_root}/class_names.txt``, else from all xml files, see
    :func:`od2.data.datasets.voc.load_voc`.

    Raises:
        ValueError: ``name`` is already taken.
    """
    voc_root = Path(os.path.abspath(voc_root))
    class_names = list(class_names) if class_names is not None else None

    def load(_: Path) -> DatasetInfo:
        parts = ("Annotations/", "JPEGImages/", f"ImageSets/Main/{split}.txt")
        layout = "\n".join(f"  {voc_root}/{p}" for p in parts)
        _require_path(name, voc_root, layout)
        return load_voc(voc_root, split, class_names=class_names, name=name)

    _register(name, load)


def register_yolo(name: str, data_yaml: str | os.PathLike, split: str) -> None:
    """Make one split of a YOLO txt dataset available as ``get_dataset(name)``.

    ``data_yaml`` is the Ultralytics ``data.yaml`` (relative paths are taken relative to the
    current directory at registration time); ``split`` is its key naming the images (``train``,
    ``val``, ...). See :func:`od2.data.datasets.yolo.load_yolo`. Files are read on first use.

    Raises:
        ValueError: ``name`` is already taken.
    """
    data_yaml = Path(os.path.abspath(data_yaml))

    def load(_: Path) -> DatasetInfo:
        _require_path(name, data_yaml, f"  {data_yaml} (Ultralytics data.yaml: path, {split}, names)")
        return load_yolo(data_yaml, split, name=name)

    _register(name, load)


def _resolve_yolo_name(name: str, root: str | os.PathLike | None) -> tuple[Path, str]:
    """``"yolo:PATH:SPLIT"`` -> (absolute data.yaml path, split); relative PATH: cwd, then the datasets root."""
    body = name[len(YOLO_PREFIX):]
    path, sep, split = body.rpartition(":")
    if not sep or not path or not split:
        raise DatasetNotFoundError(
            f"dataset name {name!r}: a YOLO dataset is named 'yolo:PATH/data.yaml:SPLIT', "
            "e.g. 'yolo:datasets/pets/data.yaml:train'"
        )
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates.append((Path(root) if root is not None else default_root()) / path)
    for candidate in candidates:
        if candidate.is_file():
            return Path(os.path.abspath(candidate)), split
    looked = " and ".join(str(Path(os.path.abspath(c))) for c in candidates)
    raise FileNotFoundError(
        f"dataset {name!r}: YOLO data file {path!r} not found (looked for {looked}); "
        "name a YOLO split as 'yolo:PATH/data.yaml:SPLIT'"
    )


def _resolve_path(name: str, path: str, what: str, root: str | os.PathLike | None, is_dir: bool = False) -> Path:
    """The absolute path of ``path`` from dataset ``name``: as given when absolute, else from the current directory,
    then under the datasets root; a FileNotFoundError naming ``what`` and the places looked at."""
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates.append((Path(root) if root is not None else default_root()) / path)
    for candidate in candidates:
        if candidate.is_dir() if is_dir else candidate.is_file():
            return Path(os.path.abspath(candidate))
    looked = " and ".join(str(Path(os.path.abspath(c))) for c in candidates)
    raise FileNotFoundError(f"dataset {name!r}: {what} {path!r} not found (looked for {looked})")


def _coco_path_name(name: str, root: str | os.PathLike | None) -> tuple[tuple[str, str], Callable[[], DatasetInfo]]:
    """``"coco:ANNOTATIONS.json[:IMAGE_DIR]"`` -> (cache key, loader)."""
    parts = name[len(COCO_PREFIX):].split(":")
    form = "name a COCO json as 'coco:ANNOTATIONS.json' or 'coco:ANNOTATIONS.json:IMAGE_DIR'"
    if len(parts) > 2:
        raise DatasetNotFoundError(f"dataset name {name!r}: a path holds ':', which a coco: name cannot tell from the "
                                   f"':' before IMAGE_DIR; {form}, with paths free of ':' (or give a folder without "
                                   "':' a link), or use register_coco_instances in Python")
    if not parts[0] or (len(parts) == 2 and not parts[1]):
        raise DatasetNotFoundError(f"dataset name {name!r}: {form}, e.g. 'coco:datasets/pets/annotations/"
                                   "instances_train.json'")
    json_file = _resolve_path(name, parts[0], "COCO annotation file", root)
    image_root = _resolve_path(name, parts[1], "image folder", root, is_dir=True) if len(parts) == 2 else None
    return (name, f"{json_file}:{image_root}"), lambda: load_coco_json(json_file, image_root, name=name)


def _voc_path_name(name: str, root: str | os.PathLike | None) -> tuple[tuple[str, str], Callable[[], DatasetInfo]]:
    """``"voc:ROOT:SPLIT"`` -> (cache key, loader); the split is the text after the last ``:``."""
    path, sep, split = name[len(VOC_PREFIX):].rpartition(":")
    if not sep or not path or not split:
        raise DatasetNotFoundError(f"dataset name {name!r}: a VOC split is named 'voc:ROOT:SPLIT', where ROOT holds "
                                   "Annotations/, JPEGImages/ and ImageSets/Main/SPLIT.txt, e.g. "
                                   "'voc:datasets/BCCD:train'")
    voc_root = _resolve_path(name, path, "VOC root folder", root, is_dir=True)
    return (name, str(voc_root)), lambda: load_voc(voc_root, split, name=name)


def _yolo_path_name(name: str, root: str | os.PathLike | None) -> tuple[tuple[str, str], Callable[[], DatasetInfo]]:
    """``"yolo:PATH/data.yaml:SPLIT"`` -> (cache key, loader)."""
    data_yaml, split = _resolve_yolo_name(name, root)
    return (name, str(data_yaml)), lambda: load_yolo(data_yaml, split, name=name)


def _register(name: str, load: _Loader) -> None:
    """Add a user registration; names must be new."""
    if name in _BUILTINS or name in _registered:
        raise ValueError(f"dataset name {name!r} is already registered; choose another name")
    _registered[name] = load


def _make_builtin_loaders() -> dict[str, _Loader]:
    """Built-in dataset names -> loaders taking the datasets root."""
    loaders: dict[str, _Loader] = {}
    for name, parts in _COCO_SPLITS.items():
        loaders[name] = lambda root, name=name, parts=parts: _load_coco_builtin(name, parts, root)
    for split in _BCCD_SPLITS:
        loaders[f"bccd_{split}"] = lambda root, split=split: load_voc(
            _bccd_root(root), split, class_names=BCCD_CLASSES, name=f"bccd_{split}"
        )
    for split in _DIGITS_SPLITS:
        loaders[f"digits_{split}"] = lambda root, split=split: load_digits_split(root, split)
    return loaders


def _load_coco_builtin(name: str, parts: tuple[tuple[str, str], ...], root: Path) -> DatasetInfo:
    """Load (and merge, for several parts) a built-in COCO dataset under ``{root}/coco``."""
    layout = "\n".join(
        f"  {root}/coco/annotations/{json_name}\n  {root}/coco/{image_dir}/" for image_dir, json_name in parts
    )
    datasets = []
    for image_dir, json_name in parts:
        json_file = root / "coco" / "annotations" / json_name
        image_root = root / "coco" / image_dir
        _require_path(name, json_file, layout, root)
        _require_path(name, image_root, layout, root)
        part_name = name if len(parts) == 1 else f"{name}:{Path(json_name).stem}"
        datasets.append(load_coco_json(json_file, image_root, name=part_name))
    return datasets[0] if len(datasets) == 1 else merge_datasets(name, datasets)


def _bccd_root(root: Path) -> Path:
    """``{root}/bccd``, or a FileNotFoundError that says where to put it."""
    bccd = root / "bccd"
    if bccd.is_dir():
        return bccd
    raise FileNotFoundError(
        f"BCCD not found at {bccd}. Put the VOC-layout BCCD dataset (Annotations/, ImageSets/Main/, JPEGImages/) "
        f"there, or pass root= / set DATASETS.ROOT or ${DATASETS_ENV} to the folder holding bccd/"
    )


def _require_path(name: str, path: Path, layout: str, root: Path | None = None) -> None:
    """Raise FileNotFoundError naming the dataset, the missing path and the expected layout."""
    if path.exists():
        return
    where = (
        f" under the datasets root {root} (the root argument, ${DATASETS_ENV}, or ./datasets)"
        if root is not None
        else ""
    )
    raise FileNotFoundError(f"dataset {name!r}: {path} does not exist. Expected layout{where}:\n{layout}")


_BUILTINS: dict[str, _Loader] = _make_builtin_loaders()
# Prefix of a dataset named by path -> its parser, which returns the cache key and the loader.
_PATH_NAMES = {COCO_PREFIX: _coco_path_name, VOC_PREFIX: _voc_path_name, YOLO_PREFIX: _yolo_path_name}
