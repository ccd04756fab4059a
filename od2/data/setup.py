"""Config -> datasets and loaders (thin translations of INPUT/DATASETS/DATALOADER keys)."""

from __future__ import annotations

import logging
from dataclasses import replace

from od2.config import CfgNode
from od2.utils import comm as dist

from .catalog import get_dataset
from .image_check import drop_bad_images
from .loader import build_test_loader, build_train_loader, stitcher_seed
from .records import DatasetInfo

logger = logging.getLogger(__name__)


def load_datasets(names: list[str], cfg: CfgNode, key: str = "DATASETS.TRAIN") -> DatasetInfo:
    """The named datasets (DATASETS.TRAIN may list several), concatenated; class lists must agree.

    Their images are checked (od2.data.image_check: cached, in DATALOADER.NUM_WORKERS processes) and the bad ones
    left out or refused as DATALOADER.BAD_IMAGES, MAX_BAD_IMAGE_SHARE and INPUT.MAX_IMAGE_PIXELS say. ``key`` is
    the config key that named them, for the errors.

    Raises:
        ValueError: no name, a dataset without images, or datasets whose class lists differ; the message
            names the dataset and ``key``.
    """
    if not names:
        raise ValueError(f"{key} is empty: name at least one dataset (e.g. digits_train)")
    infos = [get_dataset(name, cfg.DATASETS.ROOT or None) for name in names]
    for info in infos:
        if not info.records:
            raise ValueError(f"dataset {info.name!r} ({key}) has no images: check its annotation file and image "
                             "folder, or name another dataset")
    first = infos[0]
    for info in infos[1:]:
        require_same_classes(first, info)
    merged = first if len(infos) == 1 else replace(first, name="+".join(names),
                                                   records=[r for i in infos for r in i.records])
    merged = drop_bad_images(merged, policy=cfg.DATALOADER.BAD_IMAGES, max_share=cfg.DATALOADER.MAX_BAD_IMAGE_SHARE,
                             max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS, num_workers=cfg.DATALOADER.NUM_WORKERS,
                             progress=dist.is_main_process())
    num_boxes = sum(len(r["boxes"]) for r in merged.records)
    logger.info("dataset %s: %d images, %d boxes, %d classes", merged.name, len(merged.records), num_boxes,
                len(merged.class_names))
    return merged


def require_same_classes(first: DatasetInfo, other: DatasetInfo) -> None:
    """A ValueError naming both datasets unless their class lists are equal: a label is a position in the list,
    so the same classes in another order would be trained or scored as other classes."""
    if list(other.class_names) != list(first.class_names):
        raise ValueError(f"datasets {first.name!r} and {other.name!r} have different classes: "
                         f"{list(first.class_names)} vs {list(other.class_names)}")


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
        max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS,
    )


def build_test_loader_from_cfg(cfg: CfgNode, records: list[dict], resize: tuple[int | None, int] | None = None):
    """This rank's share of ``records``, resized to INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, in order; ``resize``
    (min_size or None for the original size, max_size) replaces those two keys."""
    min_size, max_size = resize or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    return build_test_loader(
        records, min_size=min_size, max_size=max_size,
        batch_size=cfg.TEST.IMS_PER_BATCH, num_workers=cfg.DATALOADER.NUM_WORKERS, rank=dist.get_rank(),
        world_size=dist.get_world_size(), size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY,
        bad_images=cfg.DATALOADER.BAD_IMAGES, max_pixels=cfg.INPUT.MAX_IMAGE_PIXELS,
    )
