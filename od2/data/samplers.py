"""The training batch sampler: an infinite, deterministic, resumable stream of batches per rank.

Stream definition (everything is index arithmetic on record sizes; no image is read):

- Epoch e shuffles all N indices with ``np.random.default_rng([seed, SHUFFLE_STREAM, e]).permutation(N)`` and pads
  the permutation by wrapping around to ``P * world_size`` entries, P = ceil(N / world_size). Rank r takes entries
  r, r + world_size, ...: equal-length shards, disjoint except for the wrapped padding.
- Draw i of the shard in epoch e gets the number n = (e * P + i) * world_size + r, its position in the padded global
  stream; n is unique across ranks and epochs and seeds that draw's augmentation (see ``DetectionDataset``).
- With aspect-ratio grouping, draws go to one of two buckets (width >= height, width < height) and a batch is emitted
  as soon as a bucket holds ``batch_size`` draws (detectron2's AspectRatioGroupedDataset, done on indices). Leftover
  draws carry over into the next epoch. Without grouping there is one bucket.

Batch k of the stream is therefore a pure function of (records' aspect ratios, batch_size, seed, rank, world_size),
so ``start_iter=k`` replays the arithmetic of the first k batches and yields exactly what the uninterrupted stream
yields from batch k on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["SHUFFLE_STREAM", "TrainBatchSampler"]

logger = logging.getLogger(__name__)

# First word after the seed in the sampler's SeedSequence, so shuffles never share a stream with augmentation draws.
SHUFFLE_STREAM = 0


class TrainBatchSampler:
    """Yield batches as lists of ``(n, index)``: the global draw number and the record index.

    Args:
        records: ImageRecords; only ``height`` and ``width`` are read.
        batch_size: images per batch on this rank.
        seed: non-negative base seed.
        rank, world_size: this process's shard.
        group_by_aspect_ratio: batch landscape (w >= h) and portrait images separately.
        start_iter: number of batches to skip (the iteration a resumed run starts at).
    """

    def __init__(
        self,
        records: Sequence[dict],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        group_by_aspect_ratio: bool = True,
        start_iter: int = 0,
    ) -> None:
        if not records:
            raise ValueError("TrainBatchSampler needs at least one record")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if start_iter < 0:
            raise ValueError(f"start_iter must be non-negative, got {start_iter}")
        self.num_records = len(records)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter
        self.per_rank = -(-self.num_records // world_size)
        if group_by_aspect_ratio:
            portrait = np.array([r["width"] < r["height"] for r in records], dtype=bool)
            self._bucket = portrait.astype(np.int64)
            self._num_buckets = 2
            logger.debug("aspect-ratio grouping: %d landscape, %d portrait", (~portrait).sum(), portrait.sum())
        else:
            self._bucket = np.zeros(self.num_records, dtype=np.int64)
            self._num_buckets = 1

    def _shard(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(draw numbers, record indices) of this rank in ``epoch``, both int64 [per_rank]."""
        perm = np.random.default_rng([self.seed, SHUFFLE_STREAM, epoch]).permutation(self.num_records)
        indices = np.resize(perm, self.per_rank * self.world_size)[self.rank :: self.world_size]
        draws = (epoch * self.per_rank + np.arange(self.per_rank)) * self.world_size + self.rank
        return draws, indices

    def _epoch_batches(self, epoch: int, carry: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Batches completed during ``epoch``, in emission order.

        Args:
            carry: per bucket, int64 [k < batch_size, 2] (n, index) draws left over from earlier epochs.

        Returns:
            int64 [num_batches, batch_size, 2] of (n, index), and the new carry.
        """
        draws, indices = self._shard(epoch)
        bucket = self._bucket[indices]
        position = np.arange(self.per_rank)
        batches, completed_at, new_carry = [], [], []
        for b in range(self._num_buckets):
            mask = bucket == b
            items = np.concatenate([carry[b], np.stack([draws[mask], indices[mask]], axis=1)])
            # Carried draws come before this epoch: position -1 (a batch never completes on one).
            item_position = np.concatenate([np.full(len(carry[b]), -1), position[mask]])
            num_full = len(items) // self.batch_size * self.batch_size
            batches.append(items[:num_full].reshape(-1, self.batch_size, 2))
            completed_at.append(item_position[self.batch_size - 1 : num_full : self.batch_size])
            new_carry.append(items[num_full:])
        order = np.argsort(np.concatenate(completed_at), kind="stable")
        return np.concatenate(batches)[order], new_carry

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        carry = [np.zeros((0, 2), dtype=np.int64)] * self._num_buckets
        to_skip = self.start_iter
        epoch = 0
        while True:
            batches, carry = self._epoch_batches(epoch, carry)
            epoch += 1
            if to_skip >= len(batches):
                to_skip -= len(batches)
                continue
            for batch in batches[to_skip:].tolist():
                yield [(n, index) for n, index in batch]
            to_skip = 0
