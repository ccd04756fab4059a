"""``od2 data show``: draw what the model is fed, after every augmentation, with its boxes and class names."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from od2.config import CfgNode
from od2.data.setup import build_test_loader_from_cfg, build_train_loader_from_cfg, load_datasets
from od2.utils.visualize import draw_detections, save_prediction_grid

logger = logging.getLogger(__name__)

__all__ = ["show_batches"]


def show_batches(cfg: CfgNode, out_dir: str | os.PathLike, split: str = "train", num_images: int = 16,
                 mosaic: bool = False) -> list[Path]:
    """Write the first ``num_images`` images the ``split`` loader yields as PNGs, with their boxes drawn.

    ``train`` draws from the training loader of the config (INPUT.DATAPROCESS, multi-scale sizes, flip, Stitch; the
    same stream a training run with SEED sees first); ``mosaic`` draws from the Stitcher 2x2 loader instead. ``test``
    draws DATASETS.TEST[0] as evaluation resizes it. Each PNG is one padded batch image (what the network receives),
    named ``{split}_{k:03d}_image{image_id}.png``; ``overview.png`` tiles them all. A test set smaller than
    ``num_images`` is drawn whole.

    Returns:
        The paths written (the per-image PNGs, then the overview).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    names = cfg.DATASETS.TRAIN if split == "train" else cfg.DATASETS.TEST[:1]
    if not names:
        raise ValueError(f"DATASETS.{split.upper()} is empty: nothing to show")
    info = load_datasets(list(names), cfg, key=f"DATASETS.{split.upper()}")
    if split == "train":
        loader = build_train_loader_from_cfg(cfg, info.records, mosaic=mosaic)
    else:
        loader = build_test_loader_from_cfg(cfg, info.records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn, paths = [], []
    for batch in loader:
        for image, boxes, labels, image_id in zip(batch["images"], batch["boxes"], batch["labels"],
                                                  batch["image_ids"]):
            picture = draw_detections(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), boxes.numpy(),
                                      labels.numpy(), None, info.class_names)
            path = out / f"{split}{'_mosaic' if mosaic else ''}_{len(drawn):03d}_image{image_id}.png"
            Image.fromarray(picture).save(path)
            drawn.append(picture)
            paths.append(path)
            if len(drawn) == num_images:
                break
        if len(drawn) == num_images:
            break
    paths.append(out / "overview.png")
    save_prediction_grid(drawn, paths[-1])
    logger.info("wrote %d images of %s (%s) and overview.png to %s", len(drawn), info.name, split, out)
    return paths
