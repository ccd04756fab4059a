"""Hooks that keep the training state between steps: the learning rate, the EMA of the weights, the Stitcher feed."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..ema import ModelEMA
from ..lr_schedule import LRSchedule
from ..train_feed import TrainFeed
from .base import HookBase

logger = logging.getLogger(__name__)


class LRScheduler(HookBase):
    """Sets every parameter group's learning rate to ``schedule(iteration)`` before each step.

    The schedule is a closed-form function of the iteration, so it needs no checkpoint state.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: LRSchedule):
        self.optimizer, self.schedule = optimizer, schedule

    def before_step(self, iteration: int) -> None:
        lr = self.schedule(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class EMAHook(HookBase):
    """Moves ``ema`` towards ``model`` after every step (MODEL.EMA); checkpoints hold it as ``ema``,
    ``ema_updates``.

    Resuming a checkpoint without those keys restarts the EMA from the resumed weights.
    """

    def __init__(self, ema: ModelEMA, model: torch.nn.Module):
        self.ema, self.model = ema, model

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        self.ema.update(self.model)

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict()

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        if "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint)
            return
        self.ema.load_state_dict({"ema": self.model.state_dict(), "ema_updates": 0})
        logger.warning("the checkpoint holds no EMA weights: the EMA restarts from the resumed weights")


class TrainFeedHook(HookBase):
    """Gives each step's losses back to the :class:`TrainFeed` (the Stitcher's choice of the next batch) and keeps
    the feed's position in checkpoints (``feed_regular_batches``, ``feed_mosaic_batches``, ``feed_mosaic_next``)."""

    def __init__(self, feed: TrainFeed):
        self.feed = feed

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        self.feed.feedback(losses)

    def state_dict(self) -> dict[str, Any]:
        return self.feed.state_dict()

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.feed.load_state_dict(checkpoint)
