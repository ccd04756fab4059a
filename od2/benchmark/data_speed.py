"""Training data pipeline throughput: the real training loader of a config, run in this process."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from od2.config import load_config, resolve_config
from od2.data.catalog import default_root
from od2.data.setup import build_train_loader_from_cfg, load_datasets

BCCD_CONFIG = resolve_config("bccd/retinanet_lite0.yaml")
DIGITS_CONFIG = resolve_config("digits/retinanet_lite0.yaml")


def loader_images_per_second(config: str | Path, overrides: list[str], num_images: int) -> float:
    """Source images per second of one pass of ``config``'s training loader over about ``num_images`` images.

    The loader runs with 0 workers, i.e. in this process: read + decode, the per-image pipeline, batch-level
    augmentation and collate, which is the work of one DataLoader worker (give it one intra-op thread to match).
    """
    cfg = load_config(config, ["DATALOADER.NUM_WORKERS=0", *overrides])
    records = load_datasets(cfg.DATASETS.TRAIN, cfg).records
    mosaic = cfg.INPUT.STITCHER.ENABLED
    loader = build_train_loader_from_cfg(cfg, records, mosaic=mosaic)
    per_batch = cfg.SOLVER.IMS_PER_BATCH * (4 if mosaic else 1)
    batches = max(1, num_images // per_batch)
    start = time.perf_counter()
    for _ in itertools.islice(loader, batches):
        pass
    return batches * per_batch / (time.perf_counter() - start)


def default_pipeline() -> tuple[str, Path, list[str]]:
    """(description, config, overrides) of the pipeline ``od2 bench`` measures: BCCD's JPEGs when the datasets
    root (``$OD2_DATASETS``, else ./datasets) holds bccd/, else the embedded digits dataset (generated on first
    use)."""
    root = default_root()
    if (root / "bccd").is_dir():
        return "BCCD 640x480 JPEGs, short side 416-544, flip", BCCD_CONFIG, [f"DATASETS.ROOT={root}"]
    return "digits PNG scenes, short side 160-224, flip", DIGITS_CONFIG, []
