"""The hook interface (detectron2's ``HookBase``, Lightning's ``Callback``) and the merge of hook checkpoint states."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from od2.engine.trainer import Trainer


class HookBase:
    """One job around the training loop; every method is optional (the defaults do nothing).

    The trainer calls, on each of its hooks in list order (see :mod:`od2.engine.hooks` for the list)::

        before_train()
        for iteration in range(start_iter, max_iter):
            before_step(iteration)
            # the trainer takes a batch and makes one SGD step
            after_step(iteration, losses)      # an evaluation due now calls after_evaluation(iteration, summary)
        after_train()                          # always; after on_exception(iteration, error) if something raised

    ``iteration`` is the 0-based index of the step: once it is done, ``iteration + 1`` steps are, the number that
    ``metrics.jsonl``, checkpoint names and a checkpoint's ``"iteration"`` (the next step to run) use.

    Attributes:
        trainer: the :class:`~od2.engine.trainer.Trainer` that registered the hook (a weak proxy), set before any
            call, ``load_state_dict`` included. A hook may read ``cfg``, ``model`` (DDP-wrapped in multi-process
            runs), ``bare_model``, ``eval_model``, ``optimizer``, ``scaler``, ``ema``, ``feed``, ``device``,
            ``output_dir``, ``class_names``, ``start_iter``, ``max_iter``, ``data_time`` (seconds the last batch
            took), ``skipped_images`` (training images replaced so far) and ``last_evaluation``, and call
            ``save_checkpoint(name, iteration)``, ``report_evaluation(iteration, summary)`` and
            ``stop_after_step(iteration, reason)``; it should change none of them except through its own job.

    Hooks run in every process of a multi-process run; ``save_checkpoint`` and an evaluator synchronise the
    processes, so a hook calls them on every rank or on none.
    """

    trainer: Trainer

    def before_train(self) -> None:
        """Once, after a resume restored the checkpoint, before the first step."""

    def after_train(self) -> None:
        """Once at the end, also when a step or a hook raised: close files here."""

    def before_step(self, iteration: int) -> None:
        """Before the trainer takes the batch of step ``iteration``."""

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        """After the optimizer update of step ``iteration``.

        Args:
            losses: the step's finite loss entries averaged over processes: each ``loss_*``, ``total_loss`` and
                statistics such as ``small_box_loss_share``.
        """

    def after_evaluation(self, iteration: int, summary: dict[str, Any] | None) -> None:
        """After an evaluation of the weights of step ``iteration`` (during that step's ``after_step`` calls).

        Args:
            summary: what the evaluator returned (for COCO: AP, AP50, ..., ARl as fractions, s_per_img); None
                in the processes other than rank 0.
        """

    def on_exception(self, iteration: int, error: BaseException) -> None:
        """A step or a hook raised ``error`` during step ``iteration``; it propagates after every hook saw it."""

    def state_dict(self) -> dict[str, Any]:
        """Entries this hook adds to every training checkpoint (top-level keys; empty if it keeps no state)."""
        return {}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore from the whole training ``checkpoint`` being resumed; it may predate the hook's keys."""


def merge_checkpoint_states(core: dict[str, Any], hooks: Iterable[HookBase],
                            reserved: Iterable[str] = ()) -> dict[str, Any]:
    """``core`` (the trainer's own checkpoint entries) plus every hook's ``state_dict()``.

    Args:
        reserved: more keys of the trainer's, written elsewhere (the model, optimizer, iteration and RNG).

    Raises:
        ValueError: when two hooks, or a hook and the trainer, write the same key (one would silently win).
    """
    merged, owners = dict(core), dict.fromkeys([*core, *reserved], "the trainer")
    for hook in hooks:
        owner = type(hook).__name__
        for key, value in hook.state_dict().items():
            if key in owners:
                raise ValueError(f"{owner} and {owners[key]} both write the checkpoint entry {key!r}; give one of "
                                 "them another key")
            merged[key], owners[key] = value, owner
    return merged
