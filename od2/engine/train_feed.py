"""The training batches of a run, including the Stitcher feedback loop (Chen et al. 2020; ``INPUT.STITCHER``).

Without Stitcher, batch k of the run is batch k of the training loader. With Stitcher, a second loader yields
batches of 2x2 mosaics built from images resized to half the training sizes (``od2.data.stitch.mosaic_2x2``, run
in its workers), and after each step the trainer's ``TrainFeedHook`` reports the step's ``small_box_loss_share``
(the share of the box regression loss from ground truth smaller than ``INPUT.STITCHER.SMALL_AREA``): if it is below
``INPUT.STITCHER.THRESHOLD``, the next batch is a mosaic batch, else a regular one. The share is averaged over
ranks before the decision, so all ranks switch together.

Both loaders are deterministic streams, so the feed's state is three numbers (batches taken from each loader and
the pending decision); checkpoints store them and a resumed run continues exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from od2.config import CfgNode
from od2.data.setup import build_train_loader_from_cfg

logger = logging.getLogger(__name__)

__all__ = ["TrainFeed"]


class TrainFeed:
    """Yields the run's training batches and takes the Stitcher feedback.

    A new feed starts at the first batch of each loader; :meth:`load_state_dict` moves it to where a checkpointed
    run stopped. The loaders open at the first :meth:`next_batch`.

    Args:
        cfg: the run's config.
        records: training ImageRecords.
    """

    def __init__(self, cfg: CfgNode, records: list[dict]):
        self.cfg, self.records = cfg, records
        stitcher = cfg.INPUT.STITCHER
        self.enabled = stitcher.ENABLED
        self.threshold = stitcher.THRESHOLD
        self.regular_batches = 0
        self.mosaic_batches = 0
        self.mosaic_next = False
        self._in_step = False  # a batch was taken and its step has not reported back yet
        self._regular: Iterator[dict] | None = None
        self._mosaic: Iterator[dict] | None = None

    def next_batch(self) -> dict:
        """The next batch dict (a mosaic batch if the last feedback asked for one)."""
        if self._regular is None:
            self._open_loaders()
        self._in_step = True
        if self.mosaic_next:
            self.mosaic_batches += 1
            return next(self._mosaic)
        self.regular_batches += 1
        return next(self._regular)

    def _open_loaders(self) -> None:
        cfg, records = self.cfg, self.records
        self._regular = iter(build_train_loader_from_cfg(cfg, records, start_iter=self.regular_batches))
        if self.enabled:
            self._mosaic = iter(build_train_loader_from_cfg(cfg, records, start_iter=self.mosaic_batches, mosaic=True))

    def feedback(self, losses: dict[str, float]) -> None:
        """Decide the next batch's kind from a step's rank-averaged losses (no-op without Stitcher)."""
        self._in_step = False
        if self.enabled:
            self.mosaic_next = losses["small_box_loss_share"] < self.threshold

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the feed exactly (empty without Stitcher).

        Saved during a step (the trainer's checkpoint before a non-finite loss), the state is the one before that
        step's batch was taken, so a resume replays that batch.
        """
        if not self.enabled:
            return {}
        regular, mosaic = self.regular_batches, self.mosaic_batches
        if self._in_step:
            mosaic -= self.mosaic_next
            regular -= not self.mosaic_next
        return {"feed_regular_batches": regular, "feed_mosaic_batches": mosaic, "feed_mosaic_next": self.mosaic_next}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Continue where the run that saved the training ``checkpoint`` stopped.

        A checkpoint without the feed's keys (a run without Stitcher) resumes the regular loader at its
        ``iteration``: there batch k of the run is batch k of that loader.
        """
        if self._regular is not None:
            raise RuntimeError("TrainFeed.load_state_dict after the first batch: restore the feed before training")
        self.regular_batches = int(checkpoint.get("feed_regular_batches", checkpoint["iteration"]))
        self.mosaic_batches = int(checkpoint.get("feed_mosaic_batches", 0))
        self.mosaic_next = bool(checkpoint.get("feed_mosaic_next", False))
