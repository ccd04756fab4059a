"""The checkpointing hook: periodic and final checkpoints, and the state before a step whose loss was not finite."""

from __future__ import annotations

import logging

from ..errors import NonFiniteLossError
from .base import HookBase

logger = logging.getLogger(__name__)


class PeriodicCheckpointer(HookBase):
    """Saves ``model_{N:07d}.pth`` every ``period`` steps (0 = never), ``model_final.pth`` after the last one, and
    ``model_nonfinite_{i:07d}.pth`` (the state before step ``i``) when step ``i``'s loss is not finite.

    The trainer keeps it after every other hook, so a checkpoint holds everything they did at that step,
    evaluations included; ``--resume`` continues from the file ``last_checkpoint`` names.
    """

    def __init__(self, period: int):
        self.period = period

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        done = iteration + 1
        if done == self.trainer.max_iter:
            self.trainer.save_checkpoint("model_final.pth", done)
        elif self.period and done % self.period == 0:
            self.trainer.save_checkpoint(f"model_{done:07d}.pth", done)

    def on_exception(self, iteration: int, error: BaseException) -> None:
        if not isinstance(error, NonFiniteLossError):  # other errors may strike mid-update: no consistent state
            return
        error.saved_state = self.trainer.save_checkpoint(f"model_nonfinite_{iteration:07d}.pth", iteration)
