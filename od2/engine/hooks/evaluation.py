"""The periodic evaluation hook: runs the evaluator the caller gives the trainer, and reports its summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import HookBase

# evaluator(model) -> summary: evaluates ``model`` (bare, on the training device) in every process and returns a dict
# of results on rank 0 (None elsewhere); od2.evaluation.evaluate.build_evaluator(cfg) makes the COCO evaluation of
# DATASETS.TEST[0] that ``od2 train`` uses.
Evaluator = Callable[[torch.nn.Module], dict[str, Any] | None]


class EvalHook(HookBase):
    """Evaluates ``trainer.eval_model`` (the EMA weights with MODEL.EMA, else the raw ones) every ``period`` steps
    and after the last step, then calls every hook's ``after_evaluation`` through ``trainer.report_evaluation``."""

    def __init__(self, evaluator: Evaluator, period: int):
        if period <= 0:
            raise ValueError(f"EvalHook needs a period > 0 (TEST.EVAL_PERIOD), got {period}")
        self.evaluator, self.period = evaluator, period

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        done = iteration + 1
        if done % self.period and done != self.trainer.max_iter:
            return
        summary = self.evaluator(self.trainer.eval_model)
        self.trainer.model.train()  # the evaluator switched the raw weights to eval mode when it got them
        self.trainer.report_evaluation(iteration, summary)
