"""Config -> datasets and loaders (thin translations of INPUT/DATASETS/DATALOADER keys)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

import torch

from od2.config import CfgNode, ConfigError, check_choice
from od2.modeling.build import fixed_test_canvas
from od2.utils import comm as dist

from .catalog import DatasetNotFoundError, get_dataset
from .class_list import CLASS_NAMES_KEY, relabel, union_of_classes, warn_about_one_sided_classes
from .image_check import drop_bad_images
from .loader import build_test_loader, build_train_loader, stitcher_seed
from .records import DatasetInfo

logger = logging.getLogger(__name__)

PIN_MEMORY_CHOICES = ("auto", "always", "never")


def load_datasets(names: list[str], cfg: CfgNode, key: str = "DATASETS.TRAIN") -> DatasetInfo:
    """The named datasets (DATASETS.TRAIN may list several), concatenated, labelled by the config's class list
    (:func:`config_class_names`).

    Their images are checked (od2.data.image_check: cached, in DATALOADER.NUM_WORKERS processes) and the bad ones
    left out or refused as DATALOADER.BAD_IMAGES, MAX_BAD_IMAGE_SHARE and INPUT.MAX_IMAGE_PIXELS say. ``key`` is
    the config key that named them, for the errors.

    Raises:
        ValueError: no name, a dataset without images, or a dataset with a class that DATASETS.CLASS_NAMES lacks;
            the message names the dataset and ``key``.
    """
    if not names:
        raise ValueError(f"{key} is empty: name at least one dataset (e.g. digits_train)")
    infos = datasets_with_config_classes(names, cfg)
    for info in infos:
        if not info.records:
            raise ValueError(f"dataset {info.name!r} ({key}) has no images: check its annotation file and image "
                             "folder, or name another dataset")
    first = infos[0]
    merged = first if len(infos) == 1 else replace(first, name="+".join(names),
                                                   records=[r for i in infos for r in i.records])
    merged = drop_bad_images(merged, policy=cfg.DATALOADER.BAD_IMAGES, max_share=cfg.DATALOADER.MAX_BAD_IMAGE_SHARE,
                             max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS, num_workers=cfg.DATALOADER.NUM_WORKERS,
                             progress=dist.is_main_process())
    num_boxes = sum(len(r["boxes"]) for r in merged.records)
    logger.info("dataset %s: %d images, %d boxes, %d classes", merged.name, len(merged.records), num_boxes,
                len(merged.class_names))
    return merged


def datasets_with_config_classes(names: list[str], cfg: CfgNode) -> list[DatasetInfo]:
    """The named datasets (unchecked images), each labelled by the config's class list."""
    root = cfg.DATASETS.ROOT or None
    infos = {name: get_dataset(name, root) for name in names}
    class_names = config_class_names(cfg, infos)
    source = CLASS_NAMES_KEY if cfg.DATASETS.CLASS_NAMES else "the classes of DATASETS.TRAIN and DATASETS.TEST"
    return [relabel(infos[name], class_names, source) for name in names]


def config_class_names(cfg: CfgNode, loaded: Mapping[str, DatasetInfo] | None = None) -> list[str]:
    """The class list of every dataset of ``cfg``: DATASETS.CLASS_NAMES when set, else the union of the classes of
    the datasets in DATASETS.TRAIN and DATASETS.TEST, in order of first appearance (see od2.data.class_list).

    Classes with boxes in the training sets but none in a test set, or the other way round, are logged as warnings.
    A dataset not in ``loaded`` (those already loaded) that is unknown or whose files are missing is left out with a
    warning, so that ``od2 eval`` runs where only the test set is on disk (its own loading reports the error when it
    is the one asked for).

    Raises:
        ConfigError: DATASETS.CLASS_NAMES lists a name twice.
    """
    loaded = dict(loaded or {})
    root = cfg.DATASETS.ROOT or None
    for name in [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]:
        if name not in loaded:
            try:
                loaded[name] = get_dataset(name, root)
            except (FileNotFoundError, DatasetNotFoundError) as exc:
                logger.warning("the class list leaves out dataset %s, which cannot be loaded: %s", name, exc)
    train = [loaded[name] for name in cfg.DATASETS.TRAIN if name in loaded]
    test = [loaded[name] for name in cfg.DATASETS.TEST if name in loaded]
    if cfg.DATASETS.CLASS_NAMES:
        class_names = list(cfg.DATASETS.CLASS_NAMES)
        twice = [name for name, count in Counter(class_names).items() if count > 1]
        if twice:
            raise ConfigError(f"{CLASS_NAMES_KEY} lists {twice[0]!r} twice")
    else:
        order = dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST, *loaded])
        class_names = union_of_classes([loaded[name] for name in order if name in loaded])
    warn_about_one_sided_classes(train, test, class_names)
    return class_names


def build_train_loader_from_cfg(cfg: CfgNode, records: list[dict], start_iter: int = 0, mosaic: bool = False):
    """The infinite, deterministic training loader of this rank, positioned at ``start_iter``.

    ``mosaic``: the Stitcher loader instead (INPUT.STITCHER): images resized to half of INPUT.MIN_SIZE_TRAIN /
    MAX_SIZE_TRAIN, four per output image tiled 2x2, from its own seeded stream.
    """
    scale = 2 if mosaic else 1
    return build_train_loader(
        records, min_sizes=tuple(max(1, s // scale) for s in cfg.INPUT.MIN_SIZE_TRAIN),
        max_size=max(1, cfg.INPUT.MAX_SIZE_TRAIN // scale), flip_prob=cfg.INPUT.RANDOM_FLIP,
        batch_size=cfg.SOLVER.IMS_PER_BATCH * (4 if mosaic else 1), num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=stitcher_seed(cfg.SEED) if mosaic else cfg.SEED, rank=dist.get_rank(),
        world_size=dist.get_world_size(), size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY, start_iter=start_iter,
        group_by_aspect_ratio=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        skip_crowd=cfg.DATASETS.SKIP_CROWD_DURING_TRAINING, dataprocess=cfg.INPUT.DATAPROCESS,
        stitch_prob=0.0 if mosaic else cfg.INPUT.STITCH, mosaic=mosaic, bad_images=cfg.DATALOADER.BAD_IMAGES,
        max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS, pin_memory=pin_memory_from_cfg(cfg),
    )


def build_test_loader_from_cfg(cfg: CfgNode, records: list[dict], resize: tuple[int | None, int] | None = None):
    """This rank's share of ``records``, resized to INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, in order; ``resize``
    (min_size or None for the original size, max_size) replaces those two keys.

    With TEST.COMPILE every batch is padded to one square canvas (:func:`od2.modeling.build.fixed_test_canvas`),
    the one the compiled model is specialised to; DATALOADER.PIN_MEMORY decides page-locked batches
    (:func:`pin_memory_from_cfg`)."""
    min_size, max_size = resize or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    canvas = fixed_test_canvas(max_size, cfg.INPUT.SIZE_DIVISIBILITY) if cfg.TEST.COMPILE and min_size else None
    return build_test_loader(
        records, min_size=min_size, max_size=max_size,
        batch_size=cfg.TEST.IMS_PER_BATCH, num_workers=cfg.DATALOADER.NUM_WORKERS, rank=dist.get_rank(),
        world_size=dist.get_world_size(), size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY,
        bad_images=cfg.DATALOADER.BAD_IMAGES, max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS, canvas=canvas,
        pin_memory=pin_memory_from_cfg(cfg),
    )



def pin_memory_from_cfg(cfg: CfgNode) -> bool:
    """DATALOADER.PIN_MEMORY: ``always``, ``never``, or ``auto``: when MODEL.DEVICE is (or ``auto`` resolves to)
    a CUDA device, where page-locked batches make the host-to-device copies asynchronous."""
    value = cfg.DATALOADER.PIN_MEMORY
    check_choice("DATALOADER.PIN_MEMORY", value, list(PIN_MEMORY_CHOICES))
    if value == "auto":
        device = cfg.MODEL.DEVICE
        return torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    return value == "always"
