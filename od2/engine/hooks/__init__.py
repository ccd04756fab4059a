"""Hooks: the jobs around the training loop, each with its own checkpoint state (detectron2's hooks, Lightning's
callbacks). :class:`HookBase` documents the interface and the call order.

``Trainer(cfg, evaluator=None, hooks=())`` runs its hooks in this order:

1. :class:`LRScheduler`: the learning rate of the step (``before_step``).
2. :class:`EMAHook` (MODEL.EMA): the EMA update; checkpoint ``ema``, ``ema_updates``.
3. :class:`TrainFeedHook`: the Stitcher's choice of the next batch; checkpoint ``feed_*``.
4. the caller's ``hooks``, in their order.
5. :class:`ProgressBar`, :class:`MetricsWriter`, then the TRACKERS (:class:`MLflowTracker`, :class:`WandbTracker`)
   (rank 0 only): tqdm, ``metrics.jsonl``, TensorBoard, MLflow / Weights & Biases.
6. :class:`BestCheckpointer` (with an evaluator, TEST.EVAL_PERIOD > 0 and a TEST.BEST_METRIC): ``model_best.pth``
   and early stopping (SOLVER.PATIENCE) in ``after_evaluation``; checkpoint ``best_metric``.
7. :class:`EvalHook` (with an evaluator and TEST.EVAL_PERIOD > 0): evaluation, then every hook's
   ``after_evaluation``.
8. :class:`PeriodicCheckpointer`: checkpoints, after everything else a step did.

So a hook of the caller sees a step's ``after_step`` before that step's ``after_evaluation``, and both before the
checkpoint of that step is written. ``od2 train`` passes :class:`RunInfoWriter` (``run.json``) as a caller hook.
"""

from .base import HookBase, merge_checkpoint_states
from .best import BEST_CHECKPOINT, BestCheckpointer
from .checkpointer import PeriodicCheckpointer
from .evaluation import EvalHook, Evaluator
from .trackers import MLflowTracker, WandbTracker, build_trackers
from .training import EMAHook, LRScheduler, TrainFeedHook
from .writers import MetricsWriter, ProgressBar, RunInfoWriter

__all__ = [
    "BEST_CHECKPOINT",
    "BestCheckpointer",
    "EMAHook",
    "EvalHook",
    "Evaluator",
    "HookBase",
    "LRScheduler",
    "MLflowTracker",
    "MetricsWriter",
    "PeriodicCheckpointer",
    "ProgressBar",
    "RunInfoWriter",
    "TrainFeedHook",
    "WandbTracker",
    "build_trackers",
    "merge_checkpoint_states",
]
