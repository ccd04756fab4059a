"""Datasets, collation and data loaders producing the batch dict of docs/architecture.md.

Determinism: a training draw's augmentation generator is ``np.random.default_rng([seed, AUGMENT_STREAM, n])`` with n
the draw number from ``TrainBatchSampler``, so batches depend only on (records, config, seed, rank, world_size) and
not on the number of workers or on which process ran a draw. Together with the sampler's ``start_iter`` this makes a
resumed run see exactly the batches of an uninterrupted one. The loaders never touch the global torch, numpy or
``random`` generators.

Bad images: an image that fails to decode although it passed the integrity check (od2.data.image_check; changed since,
or a fault only decoding finds) is skipped, never fatal, unless ``bad_images="error"``. A training draw then takes
the image ``np.random.default_rng([seed, REPLACE_STREAM, n, attempt]).integers(len(records))`` instead, so a resumed
run replaces it exactly as an uninterrupted one; a test item is left out of its batch. Batches list what was skipped
in ``skipped_images``, and each skip is logged with its whole reason.

Batch-level augmentation (``Stitch``, the Stitcher 2x2 mosaic; ``od2.data.stitch``) runs in ``TrainCollate``, so in
the loader workers too, with a generator seeded by ``[seed, STITCH_STREAM, first draw number of the batch]``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from od2.data.image_io import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, read_image
from od2.data.pipelines import build_train_transforms
from od2.data.samplers import TrainBatchSampler
from od2.data.stitch import Stitch, mosaic_2x2
from od2.data.transforms import Compose, ResizeShortestEdge, Sample, Transform, image_as_tensor

__all__ = [
    "AUGMENT_STREAM",
    "DetectionDataset",
    "TrainCollate",
    "build_test_loader",
    "build_train_loader",
    "collate_batch",
    "collate_test_batch",
    "image_test_item",
    "resize_for_test",
]

logger = logging.getLogger(__name__)

# SeedSequence words after the seed: training augmentation per draw, test-time transforms per index, batch-level
# augmentation per batch, the Stitcher loader's sampler (the sampler's shuffles use SHUFFLE_STREAM = 0).
AUGMENT_STREAM = 1
TEST_STREAM = 2
STITCH_STREAM = 3
STITCHER_SAMPLER_STREAM = 4
REPLACE_STREAM = 5  # the image that stands in for one that fails to decode, per draw and attempt

# Draws in a row that may hit bad images before training gives up (the integrity check makes more than one rare).
_MAX_REPLACEMENTS = 10


class DetectionDataset(Dataset):
    """Reads and transforms ImageRecords.

    Training datasets are indexed by ``(n, index)`` pairs from ``TrainBatchSampler`` (n seeds the augmentation);
    test datasets by a record index.

    Each item is a dict:
        image       uint8 tensor [3, h, w] (possibly channels-last strided)
        boxes       float32 tensor [N, 4], XYXY in resized-image pixels
        labels      int64 tensor [N]
        image_id    int
        orig_size   (H, W) of the record
        image_size  (h, w) after the transforms
        draw        the draw number n (training items only)
        skipped_images  files that failed to decode and were replaced by this item (training items only)

    A test item whose image fails to decode is ``{"image_id", "file_name", "reason", "skipped": True}`` instead;
    :func:`collate_test_batch` leaves it out of the batch.

    Args:
        records: ImageRecords (docs/architecture.md).
        transforms: applied to every sample (e.g. a ``Compose``).
        is_train: training indexing, and crowd removal if ``skip_crowd``.
        seed: non-negative base seed of the augmentation streams.
        skip_crowd: in training, drop ``iscrowd`` boxes before the transforms, as detectron2 does. False keeps them
            as ordinary boxes, as the original's DATASETS.SKIP_CROWD_DURING_TRAINING=False did in several log rows.
            Images left without boxes stay in the stream as negatives. Test items always keep every box.
        bad_images: ``skip`` an image that fails to decode (see the module docstring) or raise (``error``).
        max_pixels: the pixel limit of ``read_image`` (None or 0: none).
    """

    def __init__(
        self,
        records: Sequence[dict],
        transforms: Transform,
        is_train: bool,
        seed: int = 0,
        skip_crowd: bool = True,
        bad_images: str = "skip",
        max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if bad_images not in ("skip", "error"):
            raise ValueError(f"bad_images (DATALOADER.BAD_IMAGES) must be 'skip' or 'error', got {bad_images!r}")
        self.records = records
        self.transforms = transforms
        self.is_train = is_train
        self.seed = seed
        self.skip_crowd = skip_crowd
        self.bad_images = bad_images
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int) -> Sample:
        """The record's image and boxes before transforms (crowd boxes removed if training with skip_crowd)."""
        record = self.records[index]
        image = read_image(record["file_name"], expected_size=(record["height"], record["width"]),
                           max_pixels=self.max_pixels)
        sample = Sample(image=image, boxes=record["boxes"], labels=record["labels"])
        if self.is_train and self.skip_crowd:
            sample = sample.select(~record["iscrowd"])
        return sample

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if self.is_train:
            if not isinstance(key, tuple):
                raise TypeError(
                    f"a training DetectionDataset is indexed by (draw, index) pairs from TrainBatchSampler, got {key!r}"
                )
            draw, index = key
            rng = np.random.default_rng([self.seed, AUGMENT_STREAM, draw])
            index, sample, skipped = self._load_or_replace(draw, index)
            item = sample_to_item(self.transforms(sample, rng), self.records[index])
            item["draw"] = int(draw)
            item["skipped_images"] = skipped
            return item
        index = key
        rng = np.random.default_rng([self.seed, TEST_STREAM, index])
        record = self.records[index]
        try:
            sample = self._load(index)
        except ImageReadError as exc:
            if self.bad_images == "error":
                raise
            logger.warning("evaluation skips image id %s: %s", record["image_id"], exc)
            return {"image_id": int(record["image_id"]), "file_name": exc.path, "reason": exc.reason, "skipped": True}
        return sample_to_item(self.transforms(sample, rng), record)

    def _load_or_replace(self, draw: int, index: int) -> tuple[int, Sample, list[str]]:
        """(index, sample, skipped files): the draw's record, or the seeded stand-in for one that fails to decode."""
        skipped: list[str] = []
        while True:
            try:
                return index, self._load(index), skipped
            except ImageReadError as exc:
                if self.bad_images == "error" or len(skipped) == _MAX_REPLACEMENTS:
                    raise
                attempt = len(skipped)
                skipped.append(exc.path)
                index = int(np.random.default_rng([self.seed, REPLACE_STREAM, draw, attempt]).integers(len(self)))
                logger.warning("training skips an image, draw %d takes record %d instead: %s", draw, index, exc)


def sample_to_item(sample: Sample, record: dict) -> dict[str, Any]:
    """A dataset item (see ``DetectionDataset``) holding ``sample`` as the transformed view of ``record``."""
    return {
        "image": image_as_tensor(sample.image).permute(2, 0, 1),
        # Copies: the arrays may still be the record's own, which in-place edits downstream must not reach.
        "boxes": torch.tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(sample.labels, dtype=torch.int64).reshape(-1),
        "image_id": int(record["image_id"]),
        "orig_size": (int(record["height"]), int(record["width"])),
        "image_size": (sample.height, sample.width),
    }


def resize_for_test(min_size: int | None, max_size: int) -> Compose:
    """The test resize: the shorter side to ``min_size`` with the longer side capped at ``max_size``, or the original
    size for ``min_size=None`` (sliced inference cuts its tiles from the original pixels)."""
    return Compose([] if min_size is None else [ResizeShortestEdge((min_size,), max_size)])


def image_test_item(image: np.ndarray, transforms: Transform, image_id: int = 0) -> dict[str, Any]:
    """A test item (``DetectionDataset``'s layout, no boxes) of an image in memory, uint8 [H, W, 3] RGB, resized as
    the test loader resizes a file (``transforms``: :func:`resize_for_test`, which draw no random numbers)."""
    sample = Sample(image=image, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64))
    record = {"image_id": image_id, "height": image.shape[0], "width": image.shape[1]}
    return sample_to_item(transforms(sample, np.random.default_rng(0)), record)


def item_to_sample(item: dict[str, Any]) -> Sample:
    """The Sample view of a dataset item (shares its memory; transforms never write into it)."""
    return Sample(image=item["image"].permute(1, 2, 0).numpy(), boxes=item["boxes"].numpy(),
                  labels=item["labels"].numpy())


def padded_size(image_sizes: Sequence[tuple[int, int]], size_divisibility: int) -> tuple[int, int]:
    """(H, W) of a batch: the largest h and w, each rounded up to a multiple of ``size_divisibility`` (if > 1)."""
    max_h = max(h for h, _ in image_sizes)
    max_w = max(w for _, w in image_sizes)
    if size_divisibility > 1:
        max_h = -(-max_h // size_divisibility) * size_divisibility
        max_w = -(-max_w // size_divisibility) * size_divisibility
    return max_h, max_w


def collate_batch(samples: Sequence[dict[str, Any]], size_divisibility: int = 32,
                  canvas: tuple[int, int] | None = None) -> dict[str, Any]:
    """Stack dataset items into the batch dict of docs/architecture.md.

    Images are zero-padded bottom/right to the batch's largest (h, w), each rounded up to a multiple of
    ``size_divisibility`` (no rounding if it is 0 or 1), or to at least ``canvas`` (H, W) when given, so that
    every batch of a compiled model has one shape.

    Returns:
        images uint8 [B, 3, H, W], image_sizes int64 [B, 2] (h, w), boxes list of float32 [Ni, 4],
        labels list of int64 [Ni], image_ids list of int, orig_sizes int64 [B, 2] (H, W).
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    image_sizes = torch.tensor([s["image_size"] for s in samples], dtype=torch.int64)
    max_h, max_w = padded_size([s["image_size"] for s in samples], size_divisibility)
    if canvas is not None:
        max_h, max_w = max(max_h, canvas[0]), max(max_w, canvas[1])
    images = torch.zeros((len(samples), 3, max_h, max_w), dtype=torch.uint8)
    for i, s in enumerate(samples):
        h, w = s["image_size"]
        images[i, :, :h, :w].copy_(s["image"])
    return {
        "images": images,
        "image_sizes": image_sizes,
        "boxes": [s["boxes"] for s in samples],
        "labels": [s["labels"] for s in samples],
        "image_ids": [s["image_id"] for s in samples],
        "orig_sizes": torch.tensor([s["orig_size"] for s in samples], dtype=torch.int64),
    }


def collate_test_batch(items: Sequence[dict[str, Any]], size_divisibility: int = 32,
                       canvas: tuple[int, int] | None = None) -> dict[str, Any]:
    """``collate_batch`` of the test items whose image decoded, plus ``skipped_images``: one dict per skipped item
    (image_id, file_name, reason). A batch whose every image was skipped holds zero images ([0, 3, 0, 0])."""
    kept = [it for it in items if not it.get("skipped")]
    skipped = [{k: it[k] for k in ("image_id", "file_name", "reason")} for it in items if it.get("skipped")]
    if kept:
        return {**collate_batch(kept, size_divisibility, canvas), "skipped_images": skipped}
    no_sizes = torch.zeros((0, 2), dtype=torch.int64)
    return {"images": torch.zeros((0, 3, 0, 0), dtype=torch.uint8), "image_sizes": no_sizes, "boxes": [], "labels": [],
            "image_ids": [], "orig_sizes": no_sizes.clone(), "skipped_images": skipped}


class TrainCollate:
    """Collate training items, applying the batch-level augmentations first.

    Args:
        size_divisibility: see ``collate_batch``.
        seed: base seed of the batch-level generator.
        stitch: the original's Stitch (``INPUT.STITCH``), applied on the batch's padded canvas size; None = off.
        mosaic: tile each 4 consecutive items 2x2 (the Stitcher loader); the batch must hold a multiple of 4.
    """

    def __init__(self, size_divisibility: int, seed: int = 0, stitch: Stitch | None = None,
                 mosaic: bool = False) -> None:
        self.size_divisibility = size_divisibility
        self.seed = seed
        self.stitch = stitch
        self.mosaic = mosaic

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        items = list(items)
        skipped = [path for it in items for path in it.get("skipped_images", ())]
        if self.mosaic:
            if len(items) % 4:
                raise ValueError(f"the Stitcher 2x2 mosaic needs a multiple of 4 images per batch, got {len(items)}")
            items = [self._merged(items[k:k + 4], mosaic_2x2([item_to_sample(it) for it in items[k:k + 4]]))
                     for k in range(0, len(items), 4)]
        if self.stitch is not None and len(items) > 1:
            rng = np.random.default_rng([self.seed, STITCH_STREAM, items[0]["draw"]])
            canvas = padded_size([it["image_size"] for it in items], self.size_divisibility)
            samples = [item_to_sample(it) for it in items]
            stitched = self.stitch(samples, canvas, rng)
            items = [it if new is old else self._merged([it], new) for it, old, new in zip(items, samples, stitched)]
        return {**collate_batch(items, self.size_divisibility), "skipped_images": skipped}

    @staticmethod
    def _merged(parts: Sequence[dict[str, Any]], sample: Sample) -> dict[str, Any]:
        """An item for a composite ``sample``; identity fields (image id, draw) from the first of its ``parts``."""
        first = parts[0]
        item = sample_to_item(sample, {"image_id": first["image_id"], "height": first["orig_size"][0],
                                       "width": first["orig_size"][1]})
        item["draw"] = first["draw"]
        return item

    def __repr__(self) -> str:
        return f"TrainCollate(stitch={self.stitch!r}, mosaic={self.mosaic})"


def _worker_init(worker_id: int) -> None:
    """Keep each loader worker on one intra-op thread: the workers are the parallelism."""
    torch.set_num_threads(1)


def _data_loader(dataset: Dataset, num_workers: int, collate_fn, **kwargs: Any) -> DataLoader:
    return DataLoader(
        dataset,
        num_workers=num_workers,
        collate_fn=collate_fn,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        # A private generator: creating a loader iterator must not consume the global torch RNG (resume exactness).
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )


def build_train_loader(
    records: Sequence[dict],
    *,
    min_sizes: Sequence[int],
    max_size: int,
    flip_prob: float,
    batch_size: int,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    size_divisibility: int = 32,
    start_iter: int = 0,
    group_by_aspect_ratio: bool = True,
    skip_crowd: bool = True,
    pin_memory: bool = False,
    dataprocess: str = "coco",
    stitch_prob: float = 0.0,
    mosaic: bool = False,
    bad_images: str = "skip",
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> DataLoader:
    """Infinite training loader: the ``dataprocess`` pipeline (``od2.data.pipelines``: optional AutoAugment, then
    ResizeShortestEdge(min_sizes, max_size) and RandomHorizontalFlip(flip_prob)) per image, then the batch-level
    Stitch (``stitch_prob`` > 0) or 2x2 mosaic (``mosaic``) in ``TrainCollate``.

    Yields batch dicts for this rank, starting at batch ``start_iter`` of the stream described in
    ``od2.data.samplers``: ``batch_size`` images, or ``batch_size // 4`` mosaics with ``mosaic``, each batch with
    ``skipped_images`` (files that failed to decode and were replaced; ``bad_images``, ``max_pixels``: see
    ``DetectionDataset``). Workers are persistent when ``num_workers > 0``.
    """
    transforms = build_train_transforms(dataprocess, min_sizes, max_size, flip_prob)
    if stitch_prob > 0 and batch_size < 2:
        logger.warning("INPUT.STITCH=%s has no effect with %d image per batch: Stitch pairs images of one batch",
                       stitch_prob, batch_size)
    collate = TrainCollate(size_divisibility, seed, stitch=Stitch(stitch_prob) if stitch_prob > 0 else None,
                           mosaic=mosaic)
    dataset = DetectionDataset(records, transforms, is_train=True, seed=seed, skip_crowd=skip_crowd,
                               bad_images=bad_images, max_pixels=max_pixels)
    sampler = TrainBatchSampler(
        records,
        batch_size,
        seed,
        rank=rank,
        world_size=world_size,
        group_by_aspect_ratio=group_by_aspect_ratio,
        start_iter=start_iter,
    )
    logger.info(
        "train loader: %d images, %d per batch, rank %d/%d, %d workers, starting at batch %d, %s, %s",
        len(records), batch_size, rank, world_size, num_workers, start_iter, transforms, collate,
    )
    return _data_loader(
        dataset,
        num_workers,
        collate,
        batch_sampler=sampler,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def build_test_loader(
    records: Sequence[dict],
    *,
    min_size: int | None,
    max_size: int,
    batch_size: int = 1,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    size_divisibility: int = 32,
    bad_images: str = "skip",
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    canvas: tuple[int, int] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """Sequential loader over this rank's shard ``records[rank::world_size]``, resized with (min_size, max_size);
    ``min_size=None`` keeps the original sizes (sliced inference cuts tiles from the original pixels). ``canvas``:
    every batch padded to at least this (H, W) (see ``collate_batch``); ``pin_memory``: batches in page-locked
    memory, for non-blocking copies to a GPU.

    Every box (crowd included) is kept; nothing is random. Images that fail to decode are left out of their batch
    and listed in its ``skipped_images`` (``bad_images="skip"``, see ``collate_test_batch``) or raise (``error``).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    dataset = DetectionDataset(records[rank::world_size], resize_for_test(min_size, max_size), is_train=False,
                               bad_images=bad_images, max_pixels=max_pixels)
    collate = functools.partial(collate_test_batch, size_divisibility=size_divisibility, canvas=canvas)
    return _data_loader(dataset, num_workers, collate, batch_size=batch_size, shuffle=False, pin_memory=pin_memory)


def stitcher_seed(seed: int) -> int:
    """The seed of the Stitcher mosaic loader: its own image order and augmentation, independent of ``seed``'s."""
    return int(np.random.SeedSequence([seed, STITCHER_SAMPLER_STREAM]).generate_state(1)[0])
