"""The best checkpoint and early stopping: ``model_best.pth`` by one evaluation metric, and the end of a run that
stopped improving (detectron2's ``BestCheckpointer``, Lightning's ``EarlyStopping``)."""

from __future__ import annotations

import logging
import math
from typing import Any

from od2.utils import comm as dist
from od2.utils.cfg_node import ConfigError, check_choice

from .base import HookBase

logger = logging.getLogger(__name__)

BEST_CHECKPOINT = "model_best.pth"
BEST_MODES = ("auto", "max", "min")


def metric_direction(metric: str, mode: str) -> str:
    """``"max"`` or ``"min"``: ``mode`` itself, or for ``"auto"`` min for losses (keys holding ``loss``) and max
    otherwise."""
    check_choice("TEST.BEST_MODE", mode, BEST_MODES)
    if mode != "auto":
        return mode
    return "min" if "loss" in metric else "max"


class BestCheckpointer(HookBase):
    """After each evaluation, writes ``model_best.pth`` when ``summary[metric]`` improved on the best so far, and
    with ``patience > 0`` stops the run after ``patience`` evaluations in a row without improvement.

    ``model_best.pth`` is a training checkpoint (:meth:`Trainer.save_checkpoint`, atomic, ``last_checkpoint``
    untouched) of the evaluated step, so it holds the EMA weights the evaluation used with MODEL.EMA, and
    ``load_model_weights(prefer_ema=True)`` (``od2 eval|predict|export --weights RUN/model_best.pth``) reads those.
    An improvement is strictly better: a tie keeps the earlier checkpoint and counts towards the patience.

    Checkpoint entry ``best_metric``: ``{"metric", "mode", "value", "iteration", "evaluations_since_best"}``
    (``iteration``: steps done at the best evaluation), so ``--resume`` continues the record and the patience count.
    A resumed run whose record was made for another metric or mode starts a new record. Stopping calls
    :meth:`Trainer.stop_after_step`, so the checkpointer writes ``model_final.pth`` at that step, whose evaluation
    (already written to ``metrics.jsonl``) is the run's last.

    Args:
        metric: the summary key (TEST.BEST_METRIC), e.g. ``"AP"``; one the summary lacks is a ConfigError at the
            first evaluation that names the keys it has.
        mode: TEST.BEST_MODE: ``"max"``, ``"min"`` or ``"auto"`` (see :func:`metric_direction`).
        patience: SOLVER.PATIENCE, evaluations without improvement before stopping; 0 never stops.
    """

    def __init__(self, metric: str, mode: str = "auto", patience: int = 0):
        if patience < 0:
            raise ConfigError(f"SOLVER.PATIENCE={patience}: give a number of evaluations >= 0 (0 = off)")
        self.metric, self.mode, self.patience = metric, metric_direction(metric, mode), patience
        self.best_value: float | None = None
        self.best_iteration = 0
        self.evaluations_since_best = 0

    def improves(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def after_evaluation(self, iteration: int, summary: dict[str, Any] | None) -> None:
        # rank 0 holds the summary: every rank takes its value (or its error) so that all decide alike
        value, error = dist.all_gather_objects(self.read_metric(summary) if summary is not None else (None, None))[0]
        if error:
            raise ConfigError(error)
        if value is None:  # the evaluator returned nothing (no summary to judge)
            return
        done = iteration + 1
        if self.improves(value):
            self.best_value, self.best_iteration, self.evaluations_since_best = value, done, 0
            self.trainer.save_checkpoint(BEST_CHECKPOINT, done, point=False)
            logger.info("new best %s %.4f at iteration %d: wrote %s", self.metric, value, done, BEST_CHECKPOINT)
            return
        self.evaluations_since_best += 1
        if self.patience and self.evaluations_since_best >= self.patience and done < self.trainer.max_iter:
            self.trainer.stop_after_step(
                iteration, f"early stopping (SOLVER.PATIENCE={self.patience}): {self.metric} has not improved for "
                f"{self.evaluations_since_best} evaluations; the best, {self.best_value:.4f} at iteration "
                f"{self.best_iteration}, is in {BEST_CHECKPOINT}")

    def read_metric(self, summary: dict[str, Any]) -> tuple[float | None, str | None]:
        """(value, None), or (None, the error message) when ``summary`` has no finite number under the metric."""
        value = summary.get(self.metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value), None
        numbers = sorted(k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        problem = "is not in" if value is None else f"is {value!r} in"
        return None, (f"TEST.BEST_METRIC={self.metric!r} {problem} the evaluation's summary (coco_summary.json); "
                      f"choose one of {numbers}")

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": {"metric": self.metric, "mode": self.mode, "value": self.best_value,
                                "iteration": self.best_iteration,
                                "evaluations_since_best": self.evaluations_since_best}}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get("best_metric")
        if record is None:
            return
        if (record["metric"], record["mode"]) != (self.metric, self.mode):
            logger.warning("the checkpoint's best record is for %s (%s), this run keeps %s (%s): a new record starts",
                           record["metric"], record["mode"], self.metric, self.mode)
            return
        self.best_value, self.best_iteration = record["value"], record["iteration"]
        self.evaluations_since_best = record["evaluations_since_best"]
