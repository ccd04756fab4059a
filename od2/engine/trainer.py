"""The iteration-based training loop (SGD + warmup + decay + global-norm clipping), single or multi-process.

``Trainer(cfg).train(resume=...)``: builds data, model and optimizer from the config, runs
``SOLVER.MAX_ITER`` iterations, logs to a tqdm bar, ``metrics.jsonl`` and TensorBoard, saves atomic
checkpoints every ``SOLVER.CHECKPOINT_PERIOD`` iterations and ``model_final.pth`` at the end, and evaluates
every ``TEST.EVAL_PERIOD`` iterations. ``resume=True`` continues from ``OUTPUT_DIR/last_checkpoint`` as if
the run had never stopped (model, optimizer, iteration, RNG, data order, EMA weights and GradScaler).

``SOLVER.AMP`` runs the forward under ``torch.autocast`` (bf16, or fp16 with a ``GradScaler`` that unscales
before clipping and skips steps with non-finite gradients); the loss values are fp32 either way.
``MODEL.EMA.ENABLED`` keeps an EMA of the weights (:mod:`od2.engine.ema`) that the evaluations use.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from od2.config import CfgNode, ConfigError
from od2.data.setup import load_datasets
from od2.evaluation.evaluate import evaluate_model
from od2.layers.norms import convert_sync_batchnorm
from od2.modeling.build import build_model

from . import distributed as dist
from .checkpoint import LAST_CHECKPOINT, last_checkpoint, load_checkpoint, save_training_checkpoint, set_rng_state
from .ema import ModelEMA
from .lr_schedule import LRSchedule
from .optimizer import build_optimizer
from .setup import load_initial_weights, resolve_device, set_seed
from .train_feed import TrainFeed

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


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
    """Owns one training run; see the module docstring."""

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg
        self.device = dist.init_distributed(resolve_device(cfg.MODEL.DEVICE))
        self.amp_dtype = amp_dtype(cfg.SOLVER.AMP, self.device)
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
        self.ema = self.new_ema()
        self.schedule = LRSchedule.from_cfg(cfg.SOLVER)
        if cfg.INPUT.STITCHER.ENABLED:
            self.bare_model.small_box_area = cfg.INPUT.STITCHER.SMALL_AREA
        self.start_iter = 0
        self.feed_state: dict = {}
        self.feed: TrainFeed | None = None
        self.writer = None

    @property
    def bare_model(self) -> torch.nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def new_ema(self) -> ModelEMA | None:
        """An EMA starting from the current weights, or None without MODEL.EMA.ENABLED."""
        ema = self.cfg.MODEL.EMA
        return ModelEMA(self.bare_model, ema.DECAY, ema.WARMUP) if ema.ENABLED else None

    def resume_or_start(self, resume: bool) -> None:
        """With ``resume``, restore everything from the last checkpoint in OUTPUT_DIR (if one exists)."""
        path = last_checkpoint(self.output_dir) if resume else None
        if resume and path is None:
            if (self.output_dir / LAST_CHECKPOINT).is_file():
                logger.warning("--resume: the checkpoint %s/%s names is missing; starting from iteration 0",
                               self.output_dir, LAST_CHECKPOINT)
            else:
                logger.info("--resume: no checkpoint in %s, starting from iteration 0", self.output_dir)
        if path is None:
            return
        state = load_checkpoint(path)
        self.bare_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_iter = int(state["iteration"])
        self.feed_state = {key: state[key] for key in TrainFeed.STATE_KEYS if key in state}
        if "rng" in state and dist.get_world_size() == state.get("world_size", 1):
            set_rng_state(state["rng"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state)
        elif self.ema is not None:
            self.ema = self.new_ema()
            logger.warning("%s holds no EMA weights: the EMA restarts from the resumed weights", path)
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        elif self.scaler.is_enabled():
            logger.warning("%s holds no GradScaler state: the fp16 loss scale starts afresh", path)
        logger.info("resumed from %s: model, optimizer, RNG%s%s restored; continuing at iteration %d", path,
                    ", EMA" if "ema" in state and self.ema else "", ", GradScaler" if "scaler" in state else "",
                    self.start_iter)

    def train(self, resume: bool = False) -> dict | None:
        """Run training; returns the final evaluation summary dict (or None without evaluation)."""
        cfg = self.cfg
        if dist.is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(cfg.dump())
        self.resume_or_start(resume)
        logger.info("mixed precision: %s; EMA of weights: %s",
                    f"SOLVER.AMP={cfg.SOLVER.AMP} (autocast {self.amp_dtype}, GradScaler "
                    f"{'on' if self.scaler.is_enabled() else 'off'})" if self.amp_dtype else "off (fp32)",
                    f"decay {cfg.MODEL.EMA.DECAY}, warmup {cfg.MODEL.EMA.WARMUP}" if self.ema else "off")
        max_iter = cfg.SOLVER.MAX_ITER
        self.feed = TrainFeed(cfg, self.train_data.records, self.start_iter, self.feed_state)
        self.model.train()
        metrics_file = (self.output_dir / "metrics.jsonl").open("a") if dist.is_main_process() else None
        if dist.is_main_process():
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.start_iter)
        bar = tqdm(total=max_iter, initial=self.start_iter, desc="train", unit="it", dynamic_ncols=True,
                   disable=not dist.is_main_process())
        summary = None
        try:
            for iteration in range(self.start_iter, max_iter):
                data_start = time.perf_counter()
                batch = self.feed.next_batch()
                data_time = time.perf_counter() - data_start
                losses = self.step(iteration, batch)
                self.feed.feedback(losses)
                bar.update(1)
                bar.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in losses.items()}
                                | {"lr": f"{self.optimizer.param_groups[0]['lr']:.2e}"}, refresh=False)
                done = iteration + 1
                if dist.is_main_process() and ((cfg.LOG_PERIOD and done % cfg.LOG_PERIOD == 0) or done == max_iter):
                    record = {"iteration": done, **losses, "lr": self.optimizer.param_groups[0]["lr"],
                              "data_time": round(data_time, 4), "time": round(bar.format_dict["elapsed"], 2),
                              **({"mosaic_batches": self.feed.mosaic_batches} if self.feed.enabled else {})}
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    for key, value in losses.items():
                        self.writer.add_scalar(f"train/{key}", value, done)
                    self.writer.add_scalar("train/lr", record["lr"], done)
                if cfg.SOLVER.CHECKPOINT_PERIOD and done % cfg.SOLVER.CHECKPOINT_PERIOD == 0 and done < max_iter:
                    self.save(f"model_{done:07d}.pth", done)
                if cfg.TEST.EVAL_PERIOD and (done % cfg.TEST.EVAL_PERIOD == 0 or done == max_iter):
                    summary = self.evaluate(done, metrics_file)
            bar.close()
            self.save("model_final.pth", max_iter)
        finally:
            bar.close()
            if metrics_file:
                metrics_file.close()
            if self.writer:
                self.writer.close()
        return summary

    def step(self, iteration: int, batch: dict) -> dict[str, float]:
        """One SGD update; returns the losses averaged over ranks (as floats)."""
        lr = self.schedule(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = batch["images"].to(self.device, non_blocking=True)
        targets = {"boxes": [b.to(self.device) for b in batch["boxes"]],
                   "labels": [lab.to(self.device) for lab in batch["labels"]]}
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss_dict = self.model(images, batch["image_sizes"], targets)
        loss_dict = {k: v.float() for k, v in loss_dict.items()}  # fp32 whatever the autocast dtype
        total = sum(v for k, v in loss_dict.items() if k.startswith("loss_"))  # other entries are statistics
        reduced = dist.reduce_mean({**loss_dict, "total_loss": total})
        if not math.isfinite(reduced["total_loss"]):
            path = self.save(f"model_nonfinite_{iteration:07d}.pth", iteration)
            raise NonFiniteLossError(
                f"loss is not finite at iteration {iteration} ({reduced}); stopped training. The state before "
                f"this iteration is saved in {path}. Try a lower SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS "
                f"or SOLVER.CLIP_NORM; --resume starts from that state and replays the same batches, so change the "
                f"config first."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()  # the scaler is a pass-through unless SOLVER.AMP is fp16
        if self.cfg.SOLVER.CLIP_NORM > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.SOLVER.CLIP_NORM)
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients hold inf/NaN
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.bare_model)
        return reduced

    def save(self, name: str, iteration: int) -> Path:
        path = self.output_dir / name
        if dist.is_main_process():
            extra = {**(self.ema.state_dict() if self.ema else {}), **(self.feed.state_dict() if self.feed else {}),
                     **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {})}
            path = save_training_checkpoint(self.output_dir, name, self.bare_model, self.optimizer, iteration,
                                            world_size=dist.get_world_size(),
                                            class_names=list(self.class_names), **extra)
        dist.barrier()
        return path

    def evaluate(self, iteration: int, metrics_file) -> dict | None:
        """COCO evaluation on DATASETS.TEST (of the EMA weights when enabled); logs AP and returns the summary."""
        if not self.cfg.DATASETS.TEST:
            return None
        model = self.ema.module if self.ema else self.bare_model
        summary = evaluate_model(self.cfg, model, self.device, self.cfg.DATASETS.TEST[0],
                                 self.output_dir / "eval", quiet=True)
        self.model.train()
        if dist.is_main_process() and summary is not None:
            tqdm.write(f"iteration {iteration}: AP {summary['AP']:.4f} AP50 {summary['AP50']:.4f}"
                       + (" (EMA weights)" if self.ema else ""))
            metrics_file.write(json.dumps({"iteration": iteration, **{f"eval/{k}": v for k, v in summary.items()}})
                               + "\n")
            metrics_file.flush()
            for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
                self.writer.add_scalar(f"eval/{key}", summary[key], iteration)
        return summary
