"""The checkpointing hook: periodic and final checkpoints, and the state before a step whose loss was not finite."""

from __future__ import annotations

import logging

from od2.utils import comm as dist

from ..checkpoint import last_checkpoint, set_aside_nonfinite
from ..errors import NonFiniteLossError
from .base import HookBase

logger = logging.getLogger(__name__)


class PeriodicCheckpointer(HookBase):
    """Saves ``model_{N:07d}.pth`` every ``period`` steps (0 = never), ``model_final.pth`` after the last one, and
    ``model_nonfinite_{i:07d}.pth`` (the state before step ``i``) when step ``i``'s loss is not finite.

    The weights before step ``i`` gave that loss, so ``--resume`` must not start from them: ``last_checkpoint`` stays
    on (or goes back to) the newest periodic checkpoint before iteration ``i``, and a periodic checkpoint of
    iteration ``i`` itself becomes the non-finite file (:func:`~od2.engine.checkpoint.set_aside_nonfinite`).

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
        trainer = self.trainer
        error.saved_state = trainer.save_checkpoint(f"model_nonfinite_{iteration:07d}.pth", iteration, point=False)
        if dist.is_main_process():
            set_aside_nonfinite(trainer.output_dir, iteration, error.saved_state)
        dist.barrier()
        error.resume_from = last_checkpoint(trainer.output_dir)
