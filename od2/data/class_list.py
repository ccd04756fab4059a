"""One class list for all of a config's datasets: train and test sets share their labels.

A label is a position in the class list, so a test set whose list differs from the training set's (a class
missing from one VOC folder, another order in a second COCO json) would score the model's classes as other classes.
The config's class list is DATASETS.CLASS_NAMES when set, else the union of the classes of every dataset in
DATASETS.TRAIN and DATASETS.TEST, in order of first appearance (the training sets' own order first). Each dataset is
relabelled to it by class name; a class that has boxes on one side only (train or test) is a warning.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .records import DatasetInfo

__all__ = ["CLASS_NAMES_KEY", "box_counts", "relabel", "union_of_classes", "warn_about_one_sided_classes"]

logger = logging.getLogger(__name__)

CLASS_NAMES_KEY = "DATASETS.CLASS_NAMES"
_warned: set[tuple] = set()


def _boxes(count: int) -> str:
    return f"{count} box" if count == 1 else f"{count} boxes"


def union_of_classes(datasets: Sequence[DatasetInfo]) -> list[str]:
    """The class names of all ``datasets``, each once, in order of first appearance."""
    return list(dict.fromkeys(name for info in datasets for name in info.class_names))


def box_counts(info: DatasetInfo) -> Counter[str]:
    """Boxes per class name in ``info`` (crowd/difficult boxes included)."""
    labels = np.concatenate([r["labels"] for r in info.records]) if info.records else np.zeros(0, np.int64)
    return Counter({info.class_names[k]: int(n) for k, n in enumerate(np.bincount(labels,
                                                                                    minlength=info.num_classes))})


def relabel(info: DatasetInfo, class_names: Sequence[str], source: str) -> DatasetInfo:
    """``info`` with labels that are positions in ``class_names`` (``info`` itself when its list is that list).

    A relabelled dataset's category ids become ``1..K`` and its ``coco_gt`` categories and annotation category
    ids follow (COCO's own ids survive only where the lists are equal).

    Args:
        source: where ``class_names`` came from, for the error.

    Raises:
        ValueError: a class of ``info`` is not in ``class_names``; the message names the class, its box count,
            the dataset and ``source``.
    """
    class_names = list(class_names)
    if list(info.class_names) == class_names:
        return info
    label_of = {name: k for k, name in enumerate(class_names)}
    counts = box_counts(info)
    unknown = [name for name in info.class_names if name not in label_of]
    if unknown:
        raise ValueError(f"dataset {info.name!r}: class {unknown[0]!r} ({_boxes(counts[unknown[0]])}) is not in the "
                         f"class list {class_names} ({source}); add it there or name another dataset")
    new_label = np.array([label_of[name] for name in info.class_names], dtype=np.int64)
    records = [{**r, "labels": new_label[r["labels"]]} for r in info.records]
    new_category_id = {cid: label_of[name] + 1 for cid, name in zip(info.category_ids, info.class_names)}
    coco_gt = {**info.coco_gt,
               "categories": [{"id": k + 1, "name": name} for k, name in enumerate(class_names)],
               "annotations": [{**a, "category_id": new_category_id[a["category_id"]]}
                               for a in info.coco_gt["annotations"]]}
    return dataclasses.replace(info, records=records, class_names=class_names,
                               category_ids=list(range(1, len(class_names) + 1)), coco_gt=coco_gt)


def warn_about_one_sided_classes(train: Sequence[DatasetInfo], test: Sequence[DatasetInfo],
                                 class_names: Sequence[str]) -> None:
    """Log a warning (once per datasets and class list) for each class with boxes in the training sets but none in
    a test set, with boxes in a test set but none in training, or with no box anywhere."""
    key = (tuple(i.name for i in train), tuple(i.name for i in test), tuple(class_names))
    if key in _warned:
        return
    _warned.add(key)
    train_counts = sum((box_counts(info) for info in train), Counter())
    test_counts = [(info.name, box_counts(info)) for info in test]
    train_names = ", ".join(info.name for info in train)
    for name in class_names:
        if train and not train_counts[name] and not any(counts[name] for _, counts in test_counts):
            logger.warning("class %r of the class list has no box in the training set (%s) nor in the test sets: "
                           "the model has an output it never learns", name, train_names)
            continue
        for test_name, counts in test_counts:
            if train and counts[name] and not train_counts[name]:
                logger.warning("class %r has %s in test split %s but none in the training set (%s): the model "
                               "cannot learn it, and its AP will be 0", name, _boxes(counts[name]), test_name,
                               train_names)
            elif train_counts[name] and not counts[name]:
                logger.warning("class %r has %s in the training set (%s) but none in test split %s: its AP "
                               "is not measured there", name, _boxes(train_counts[name]), train_names, test_name)
