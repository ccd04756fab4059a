"""The iteration-based training loop (SGD + warmup + decay + global-norm clipping), single or multi-process.

``Trainer(cfg, evaluator=None, hooks=()).train(resume=...)``: builds data, model and optimizer from the config and
runs ``SOLVER.MAX_ITER`` iterations; each one takes a batch, makes one SGD step and calls the hooks
(:mod:`od2.engine.hooks`). The built-in hooks set the learning rate, update the EMA, feed the Stitcher, show a tqdm
bar, write ``metrics.jsonl`` and TensorBoard every ``LOG_PERIOD`` iterations, evaluate every ``TEST.EVAL_PERIOD``
iterations and at the end, and save atomic checkpoints every ``SOLVER.CHECKPOINT_PERIOD`` iterations and
``model_final.pth`` at the end. ``resume=True`` continues from ``OUTPUT_DIR/last_checkpoint`` (else the newest readable
checkpoint, :func:`~od2.engine.checkpoint.load_resume_checkpoint`) as if the run had never
stopped (model, optimizer, iteration, RNG, GradScaler, and every hook's state: EMA weights, data order).

The trainer does not import od2.evaluation: the caller passes the ``evaluator`` (``od2 train`` passes
``od2.evaluation.evaluate.build_evaluator(cfg)``). Without one the run does not evaluate, and a config that asks
for evaluations (TEST.EVAL_PERIOD > 0 and DATASETS.TEST) is a ValueError.

``SOLVER.AMP`` runs the forward under ``torch.autocast`` (bf16, or fp16 with a ``GradScaler`` that unscales
before clipping and skips steps with non-finite gradients); the loss values are fp32 either way.
``MODEL.EMA.ENABLED`` keeps an EMA of the weights (:mod:`od2.engine.ema`) that the evaluations use.
``MODEL.COMPILE`` runs the training forward of backbone, neck and head through ``torch.compile``
(:mod:`od2.engine.compile`: in place, after the DDP wrap and the EMA copy; state_dict keys unchanged).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from od2.config import CfgNode, ConfigError
from od2.data.setup import load_datasets
from od2.layers.norms import convert_sync_batchnorm
from od2.modeling.build import build_model
from od2.utils import comm as dist
from od2.utils.atomic_write import remove_stale_temporaries

from .checkpoint import (
    LAST_CHECKPOINT,
    TRAINING_CHECKPOINT_KEYS,
    load_resume_checkpoint,
    save_training_checkpoint,
    set_rng_state,
)
from .compile import compile_for_training, compile_settings
from .ema import ModelEMA
from .errors import NonFiniteLossError
from .hooks import (
    BestCheckpointer,
    EMAHook,
    EvalHook,
    Evaluator,
    HookBase,
    LRScheduler,
    MetricsWriter,
    PeriodicCheckpointer,
    ProgressBar,
    TrainFeedHook,
    build_trackers,
    merge_checkpoint_states,
)
from .lr_schedule import LRSchedule
from .optimizer import build_optimizer
from .run_info import delete_run_files, run_files, write_config_record
from .setup import load_initial_weights, resolve_device, set_seed
from .train_feed import TrainFeed

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "Trainer", "amp_dtype"]

# The per-step entry that carries a batch's count of replaced images through the losses' all-reduce.
SKIPPED_KEY = "data/skipped_images"

AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """SOLVER.AMP -> the autocast dtype (None = off); a ConfigError when unknown or unsupported on ``device``."""
    if mode not in AMP_DTYPES:
        raise ConfigError(f"SOLVER.AMP={mode!r}: choose '' (off), 'bf16' or 'fp16'")
    dtype = AMP_DTYPES[mode]
    if dtype is None:
        return None
    try:
        with warnings.catch_warnings():  # an unsupported dtype only warns and disables autocast
            warnings.simplefilter("ignore")
            with torch.autocast(device.type, dtype=dtype):
                supported = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == dtype
    except RuntimeError:
        supported = False
    if not supported:
        raise ConfigError(f"SOLVER.AMP={mode!r}: torch {torch.__version__} has no {dtype} autocast on "
                          f"{device}; use another SOLVER.AMP value or '' (off)")
    return dtype


class Trainer:
    """Owns one training run; see the module docstring.

    Args:
        cfg: the run's config.
        evaluator: ``evaluator(model) -> summary`` run every TEST.EVAL_PERIOD iterations and at the end (see
            :data:`od2.engine.hooks.Evaluator`); None trains without evaluating.
        hooks: more hooks (:class:`od2.engine.hooks.HookBase`), run after the built-in state hooks and before the
            writers, the evaluation and the checkpointer (the order in :mod:`od2.engine.hooks`).

    Raises:
        ValueError: TEST.EVAL_PERIOD > 0 with a DATASETS.TEST but no ``evaluator``.
    """

    def __init__(self, cfg: CfgNode, evaluator: Evaluator | None = None, hooks: Iterable[HookBase] = ()):
        if evaluator is None and cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
            raise ValueError(f"TEST.EVAL_PERIOD={cfg.TEST.EVAL_PERIOD} asks for evaluations on {cfg.DATASETS.TEST[0]} "
                             "but the Trainer got no evaluator: pass Trainer(cfg, evaluator=od2.evaluation.evaluate."
                             "build_evaluator(cfg)) as `od2 train` does, or set TEST.EVAL_PERIOD=0")
        self.cfg = cfg
        self.device = dist.init_distributed(resolve_device(cfg.MODEL.DEVICE))
        self.amp_dtype = amp_dtype(cfg.SOLVER.AMP, self.device)
        compile_with = compile_settings(cfg.MODEL)  # checked before the data loads
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.output_dir = Path(cfg.OUTPUT_DIR)
        set_seed(cfg.SEED + dist.get_rank())
        self.train_data = load_datasets(cfg.DATASETS.TRAIN, cfg)
        self.class_names = self.train_data.class_names
        model = build_model(cfg, len(self.class_names)).to(self.device)
        if cfg.MODEL.WEIGHTS:
            load_initial_weights(model, cfg.MODEL.WEIGHTS)
        elif cfg.MODEL.BACKBONE.NORM == "FrozenBN" and not cfg.MODEL.BACKBONE.PRETRAINED:
            logger.warning("MODEL.BACKBONE.NORM is FrozenBN but the backbone starts from random weights (no "
                           "MODEL.WEIGHTS, no PRETRAINED): its BN layers stay the identity. Give MODEL.WEIGHTS "
                           "(e.g. a torchvision ResNet state_dict) or train the norms (MODEL.BACKBONE.NORM=GN or BN).")
        if dist.is_distributed():
            model = convert_sync_batchnorm(model, self.device)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        self.model = model
        self.optimizer = build_optimizer(self.bare_model, cfg.SOLVER)
        ema = cfg.MODEL.EMA
        self.ema = ModelEMA(self.bare_model, ema.DECAY, ema.WARMUP) if ema.ENABLED else None
        if compile_with is not None:  # after the EMA's deep copy, which must copy eager modules
            parts = compile_for_training(self.bare_model, *compile_with)
            logger.info("MODEL.COMPILE=%s (backend %s): the training forward of %s is compiled at the first steps",
                        *compile_with, ", ".join(parts))
        self.feed = TrainFeed(cfg, self.train_data.records)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.iteration = 0  # the step running now (on_exception reports it)
        self.data_time = 0.0
        self.skipped_images = 0  # training images that failed to decode and were replaced, all ranks, whole run
        self.last_evaluation: dict[str, Any] | None = None
        self.hooks: list[HookBase] = []
        self.register_hooks(self.default_hooks(evaluator, hooks))

    @property
    def bare_model(self) -> torch.nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights evaluations use: the EMA's with MODEL.EMA, else the bare model."""
        return self.ema.module if self.ema is not None else self.bare_model

    def default_hooks(self, evaluator: Evaluator | None, extra: Iterable[HookBase]) -> list[HookBase]:
        """The built-in hooks around ``extra`` in the order :mod:`od2.engine.hooks` documents."""
        cfg = self.cfg
        hooks: list[HookBase] = [LRScheduler(self.optimizer, LRSchedule.from_cfg(cfg.SOLVER))]
        if self.ema is not None:
            hooks.append(EMAHook(self.ema, self.bare_model))
        hooks.append(TrainFeedHook(self.feed))
        hooks.extend(extra)
        if dist.is_main_process():
            hooks += [ProgressBar(), MetricsWriter(self.output_dir, cfg.LOG_PERIOD), *build_trackers(cfg)]
        evaluates = evaluator is not None and cfg.TEST.EVAL_PERIOD > 0
        if cfg.SOLVER.PATIENCE and not (evaluates and cfg.TEST.BEST_METRIC):
            raise ConfigError(f"SOLVER.PATIENCE={cfg.SOLVER.PATIENCE} counts evaluations without improvement of "
                              "TEST.BEST_METRIC, but this run has no evaluations (TEST.EVAL_PERIOD > 0 and "
                              "DATASETS.TEST) or no TEST.BEST_METRIC; set them or SOLVER.PATIENCE=0")
        if evaluates:
            if cfg.TEST.BEST_METRIC:
                hooks.append(BestCheckpointer(cfg.TEST.BEST_METRIC, cfg.TEST.BEST_MODE, cfg.SOLVER.PATIENCE))
            hooks.append(EvalHook(evaluator, cfg.TEST.EVAL_PERIOD))
        hooks.append(PeriodicCheckpointer(cfg.SOLVER.CHECKPOINT_PERIOD))
        return hooks

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Append ``hooks`` to the hook list and give each one ``hook.trainer``."""
        for hook in hooks:
            if not isinstance(hook, HookBase):
                raise TypeError(f"a trainer hook must subclass od2.engine.hooks.HookBase, got {type(hook).__name__}")
            hook.trainer = weakref.proxy(self)  # a proxy: no reference cycle keeps a finished trainer alive
            self.hooks.append(hook)

    def resume_or_start(self, resume: bool) -> None:
        """With ``resume``, restore everything from OUTPUT_DIR's last checkpoint (:func:`load_resume_checkpoint`:
        the newest readable one when ``last_checkpoint`` names a missing or unreadable file)."""
        found = load_resume_checkpoint(self.output_dir) if resume else None
        if resume and found is None:
            logger.info("--resume: no checkpoint in %s, starting from iteration 0", self.output_dir)
        if found is None:
            return
        path, state = found
        self.bare_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_iter = int(state["iteration"])
        self.skipped_images = int(state.get("skipped_images", 0))
        if "rng" in state and dist.get_world_size() == state.get("world_size", 1):
            set_rng_state(state["rng"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        elif self.scaler.is_enabled():
            logger.warning("%s holds no GradScaler state: the fp16 loss scale starts afresh", path)
        for hook in self.hooks:
            hook.load_state_dict(state)
        logger.info("resumed from %s: model, optimizer, RNG%s and the hooks' state restored; continuing at "
                    "iteration %d", path, ", GradScaler" if "scaler" in state else "", self.start_iter)

    def prepare_output_dir(self, resume: bool, overwrite: bool) -> None:
        """Refuse an OUTPUT_DIR that holds a run unless ``resume`` or ``overwrite`` (see :meth:`train`), delete that
        run with ``overwrite``, and remove the temporary files of saves killed mid-write (rank 0)."""
        if resume and overwrite:
            raise ValueError("train(resume=True, overwrite=True): --resume continues the run in OUTPUT_DIR, "
                             "--overwrite deletes it; choose one")
        held = run_files(self.output_dir)
        checkpoints = [p.name for p in held if p.name.startswith("model_") or p.name == LAST_CHECKPOINT]
        if checkpoints and not (resume or overwrite):  # checked on every rank: all of them stop
            raise ConfigError(f"OUTPUT_DIR={self.output_dir} already holds a run ({', '.join(sorted(checkpoints))}"
                              "); continue it with --resume, start afresh over it with --overwrite (deletes its "
                              "checkpoints and metrics), or choose another OUTPUT_DIR")
        if not dist.is_main_process():
            return
        for path in remove_stale_temporaries(self.output_dir):
            logger.warning("removed %s, the temporary file of a save that was killed mid-write", path)
        if overwrite and held:
            delete_run_files(held)
            logger.warning("--overwrite: deleted the previous run's %s in %s", ", ".join(p.name for p in held),
                           self.output_dir)

    def train(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any] | None:
        """Run training; returns the last evaluation's summary (None without evaluation, and on ranks > 0).

        Args:
            resume: continue the run in OUTPUT_DIR (:meth:`resume_or_start`).
            overwrite: start afresh in an OUTPUT_DIR that holds a run: its checkpoints, ``last_checkpoint``,
                ``metrics.jsonl`` and ``tensorboard/`` are deleted first.

        Raises:
            ConfigError: OUTPUT_DIR holds checkpoints and neither ``resume`` nor ``overwrite`` says what to do.
            ValueError: both ``resume`` and ``overwrite``.
        """
        cfg = self.cfg
        self.prepare_output_dir(resume, overwrite)
        self.resume_or_start(resume)
        if dist.is_main_process():  # only now: a failed resume leaves the folder's record as it was
            write_config_record(self.output_dir, cfg.dump())
        self.checkpoint_entries()  # on every rank: a clash of hook keys stops all of them, not rank 0 alone
        logger.info("mixed precision: %s; EMA of weights: %s",
                    f"SOLVER.AMP={cfg.SOLVER.AMP} (autocast {self.amp_dtype}, GradScaler "
                    f"{'on' if self.scaler.is_enabled() else 'off'})" if self.amp_dtype else "off (fp32)",
                    f"decay {cfg.MODEL.EMA.DECAY}, warmup {cfg.MODEL.EMA.WARMUP}" if self.ema else "off")
        self.model.train()
        self.iteration = self.start_iter
        try:
            self.call_hooks("before_train")
            for self.iteration in range(self.start_iter, self.max_iter):
                self.call_hooks("before_step", self.iteration)
                data_start = time.perf_counter()
                batch = self.feed.next_batch()
                self.data_time = time.perf_counter() - data_start
                losses = self.step(self.iteration, batch)
                self.call_hooks("after_step", self.iteration, losses)
                if self.iteration + 1 >= self.max_iter:  # a hook called stop_after_step
                    break
        except BaseException as error:
            self.call_hooks("on_exception", self.iteration, error)
            raise
        finally:
            self.call_hooks("after_train")
            self.report_skipped_images()
        return self.last_evaluation

    def report_skipped_images(self) -> None:
        """One line at the end of training with the run's total of training images replaced (rank 0)."""
        if self.skipped_images and dist.is_main_process():
            logger.warning("%d training image%s failed to decode during this run and %s replaced by a seeded stand-in "
                           "(counted per draw over all ranks, resumes included; metrics.jsonl's "
                           "data/skipped_images; the log names each file and its reason)", self.skipped_images,
                           "s" if self.skipped_images > 1 else "", "were" if self.skipped_images > 1 else "was")

    def call_hooks(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, method)(*args)

    def step(self, iteration: int, batch: dict) -> dict[str, float]:
        """One SGD update at the learning rate the optimizer holds; returns the losses averaged over ranks (as
        floats). A non-finite loss raises :class:`NonFiniteLossError` before anything changed. Adds the batch's
        ``skipped_images`` of all ranks to :attr:`skipped_images` (in the same collective as the losses)."""
        images = batch["images"].to(self.device, non_blocking=True)
        targets = {"boxes": [b.to(self.device, non_blocking=True) for b in batch["boxes"]],
                   "labels": [lab.to(self.device, non_blocking=True) for lab in batch["labels"]]}
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss_dict = self.model(images, batch["image_sizes"], targets)
        loss_dict = {k: v.float() for k, v in loss_dict.items()}  # fp32 whatever the autocast dtype
        total = sum(v for k, v in loss_dict.items() if k.startswith("loss_"))  # other entries are statistics
        skipped = torch.tensor(float(len(batch.get("skipped_images", ()))))
        reduced = dist.reduce_mean({**loss_dict, "total_loss": total, SKIPPED_KEY: skipped})
        skipped_by_all_ranks = round(reduced.pop(SKIPPED_KEY) * dist.get_world_size())
        if not math.isfinite(reduced["total_loss"]):
            raise NonFiniteLossError(
                f"loss is not finite at iteration {iteration} ({reduced}); stopped training. Try a lower "
                f"SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS or SOLVER.CLIP_NORM.", iteration
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()  # the scaler is a pass-through unless SOLVER.AMP is fp16
        if self.cfg.SOLVER.CLIP_NORM > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.SOLVER.CLIP_NORM)
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients hold inf/NaN
        self.scaler.update()
        self.skipped_images += skipped_by_all_ranks
        return reduced

    def save_checkpoint(self, name: str, iteration: int, point: bool = True) -> Path:
        """Write ``OUTPUT_DIR/name`` (rank 0) with the state before step ``iteration`` and every hook's state, and
        with ``point`` make ``last_checkpoint`` name it; all ranks wait for it. Returns the path."""
        path = self.output_dir / name
        if dist.is_main_process():
            path = save_training_checkpoint(self.output_dir, name, self.bare_model, self.optimizer, iteration,
                                            point=point, **self.checkpoint_entries())
        dist.barrier()
        return path

    def checkpoint_entries(self) -> dict[str, Any]:
        """The checkpoint entries besides model, optimizer, iteration and RNG: the trainer's own and every hook's
        ``state_dict()``; a ValueError when two of them write the same key."""
        core = {"world_size": dist.get_world_size(), "class_names": list(self.class_names),
                "skipped_images": self.skipped_images,
                **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {})}
        return merge_checkpoint_states(core, self.hooks, reserved=TRAINING_CHECKPOINT_KEYS)

    def stop_after_step(self, iteration: int, reason: str) -> None:
        """End the run after step ``iteration`` (every rank must call it alike): ``max_iter`` becomes ``iteration + 1``,
        so the hooks after the caller treat this step as the last (the checkpointer writes ``model_final.pth``). The
        learning-rate schedule still follows SOLVER.MAX_ITER. ``reason`` is logged."""
        self.max_iter = iteration + 1
        logger.warning("stopping after iteration %d of %d: %s", iteration + 1, self.cfg.SOLVER.MAX_ITER, reason)

    def report_evaluation(self, iteration: int, summary: dict[str, Any] | None) -> None:
        """Keep ``summary`` as ``last_evaluation`` and call every hook's ``after_evaluation`` (for evaluating hooks)."""
        self.last_evaluation = summary
        self.call_hooks("after_evaluation", iteration, summary)
