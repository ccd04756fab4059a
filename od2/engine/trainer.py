"""The iteration-based training loop (SGD + warmup + decay + global-norm clipping), single or multi-process.

``Trainer(cfg).train(resume=...)``: builds data, model and optimizer from the config, runs
``SOLVER.MAX_ITER`` iterations, logs to a tqdm bar, ``metrics.jsonl`` and TensorBoard, saves atomic
checkpoints every ``SOLVER.CHECKPOINT_PERIOD`` iterations and ``model_final.pth`` at the end, and evaluates
every ``TEST.EVAL_PERIOD`` iterations. ``resume=True`` continues from ``OUTPUT_DIR/last_checkpoint`` as if
the run had never stopped (model, optimizer, iteration, RNG and data order).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from od2.config import CfgNode
from od2.data.setup import build_train_loader_from_cfg, load_datasets
from od2.evaluation.evaluate import evaluate_model
from od2.layers.norms import convert_sync_batchnorm
from od2.modeling.build import build_model

from . import distributed as dist
from .checkpoint import LAST_CHECKPOINT, last_checkpoint, load_checkpoint, save_training_checkpoint, set_rng_state
from .lr_schedule import LRSchedule
from .setup import load_initial_weights, resolve_device, set_seed

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def build_optimizer(model: torch.nn.Module, solver: CfgNode) -> torch.optim.SGD:
    """SGD with momentum over the trainable parameters (weight decay on all of them)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=solver.BASE_LR, momentum=solver.MOMENTUM, weight_decay=solver.WEIGHT_DECAY)


class Trainer:
    """Owns one training run; see the module docstring."""

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg
        self.device = dist.init_distributed(resolve_device(cfg.MODEL.DEVICE))
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
            model = convert_sync_batchnorm(model)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        self.model = model
        self.optimizer = build_optimizer(model, cfg.SOLVER)
        self.schedule = LRSchedule.from_cfg(cfg.SOLVER)
        self.start_iter = 0
        self.writer = None

    @property
    def bare_model(self) -> torch.nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

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
        if "rng" in state and dist.get_world_size() == state.get("world_size", 1):
            set_rng_state(state["rng"])
        logger.info("resumed from %s: model, optimizer, RNG restored; continuing at iteration %d",
                    path, self.start_iter)

    def train(self, resume: bool = False) -> dict | None:
        """Run training; returns the final evaluation summary dict (or None without evaluation)."""
        cfg = self.cfg
        if dist.is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(cfg.dump())
        self.resume_or_start(resume)
        max_iter = cfg.SOLVER.MAX_ITER
        loader = build_train_loader_from_cfg(cfg, self.train_data.records, start_iter=self.start_iter)
        data_iter = iter(loader)
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
                batch = next(data_iter)
                data_time = time.perf_counter() - data_start
                losses = self.step(iteration, batch)
                bar.update(1)
                bar.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in losses.items()}
                                | {"lr": f"{self.optimizer.param_groups[0]['lr']:.2e}"}, refresh=False)
                done = iteration + 1
                if dist.is_main_process() and ((cfg.LOG_PERIOD and done % cfg.LOG_PERIOD == 0) or done == max_iter):
                    record = {"iteration": done, **losses, "lr": self.optimizer.param_groups[0]["lr"],
                              "data_time": round(data_time, 4), "time": round(bar.format_dict["elapsed"], 2)}
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
        loss_dict = self.model(images, batch["image_sizes"], targets)
        total = sum(loss_dict.values())
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
        total.backward()
        if self.cfg.SOLVER.CLIP_NORM > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.SOLVER.CLIP_NORM)
        self.optimizer.step()
        return reduced

    def save(self, name: str, iteration: int) -> Path:
        path = self.output_dir / name
        if dist.is_main_process():
            path = save_training_checkpoint(self.output_dir, name, self.bare_model, self.optimizer, iteration,
                                            world_size=dist.get_world_size(),
                                            class_names=list(self.class_names))
        dist.barrier()
        return path

    def evaluate(self, iteration: int, metrics_file) -> dict | None:
        """COCO evaluation on DATASETS.TEST; logs the AP numbers and returns the summary dict."""
        if not self.cfg.DATASETS.TEST:
            return None
        summary = evaluate_model(self.cfg, self.bare_model, self.device, self.cfg.DATASETS.TEST[0],
                                 self.output_dir / "eval", quiet=True)
        self.model.train()
        if dist.is_main_process() and summary is not None:
            tqdm.write(f"iteration {iteration}: AP {summary['AP']:.4f} AP50 {summary['AP50']:.4f}")
            metrics_file.write(json.dumps({"iteration": iteration, **{f"eval/{k}": v for k, v in summary.items()}})
                               + "\n")
            metrics_file.flush()
            for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
                self.writer.add_scalar(f"eval/{key}", summary[key], iteration)
        return summary
