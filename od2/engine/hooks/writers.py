"""Hooks that report progress and record the run: the tqdm bar, metrics.jsonl + TensorBoard, and run.json (rank 0
registers them, the others don't)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from od2.utils import comm as dist

from ..run_info import METRICS, drop_metrics_after, write_run_info
from .base import HookBase
from .eval_summary import figures, per_class_scalars, read_png, scalars

# Summary entries the one-line evaluation report prints when the evaluator returns them (COCO's headline numbers).
HEADLINE_METRICS = ("AP", "AP50")


class RunInfoWriter(HookBase):
    """Writes ``run.json`` (:func:`od2.engine.run_info.write_run_info`: the config file and overrides the run was
    started from) before the first step, so after a resume has succeeded; a resumed run keeps the record it has.
    Only rank 0 writes."""

    def __init__(self, config_file: str | Path, overrides: list[str]):
        self.config_file, self.overrides = config_file, list(overrides)

    def before_train(self) -> None:
        if dist.is_main_process():
            write_run_info(self.trainer.output_dir, self.config_file, self.overrides,
                           resume=self.trainer.start_iter > 0)


class ProgressBar(HookBase):
    """A tqdm bar over the run's iterations whose postfix shows the last step's losses and learning rate."""

    def __init__(self):
        self.bar: tqdm | None = None

    def before_train(self) -> None:
        self.bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.start_iter, desc="train", unit="it",
                        dynamic_ncols=True)

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in losses.items()}
                             | {"lr": f"{self.trainer.optimizer.param_groups[0]['lr']:.2e}"}, refresh=False)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsWriter(HookBase):
    """Appends to ``output_dir/metrics.jsonl`` and writes TensorBoard scalars to ``output_dir/tensorboard``.

    Every ``period`` steps (0 = only the last) and after the last step: one record ``{"iteration": steps done,
    loss entries..., "lr", "data_time", "time": seconds since training (re)started, "data/skipped_images": training
    images replaced so far (the run's total, resumes included), "mosaic_batches" with Stitcher}`` and the scalars
    ``train/<loss entry>``, ``train/lr``, ``data/skipped_images``. After each evaluation: one record
    ``{"iteration", "eval/<key>": value...}`` with every summary entry, the scalars ``eval/<key>`` of its numbers
    and ``eval_per_class/<class>/<key>`` of its ``per_class`` results, its ``figures`` as images
    ``eval_figures/<name>`` (:mod:`.eval_summary`), and a printed line with its AP and AP50. A resumed run drops
    the records after the resumed iteration and appends, and TensorBoard drops the events after it.
    """

    def __init__(self, output_dir: str | Path, period: int):
        self.output_dir, self.period = Path(output_dir), period
        self.file: IO[str] | None = None
        self.tensorboard = None
        self.start_time = 0.0

    def before_train(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only where a run writes

        drop_metrics_after(self.output_dir, self.trainer.start_iter)
        self.file = (self.output_dir / METRICS).open("a")
        self.tensorboard = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.trainer.start_iter)
        self.start_time = time.perf_counter()

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        done = iteration + 1
        if not ((self.period and done % self.period == 0) or done == self.trainer.max_iter):
            return
        trainer = self.trainer
        lr = trainer.optimizer.param_groups[0]["lr"]
        record = {"iteration": done, **losses, "lr": lr, "data_time": round(trainer.data_time, 4),
                  "time": round(time.perf_counter() - self.start_time, 2),
                  "data/skipped_images": trainer.skipped_images,
                  **({"mosaic_batches": trainer.feed.mosaic_batches} if trainer.feed.enabled else {})}
        self.write(record)
        for key, value in losses.items():
            self.tensorboard.add_scalar(f"train/{key}", value, done)
        self.tensorboard.add_scalar("train/lr", lr, done)
        self.tensorboard.add_scalar("data/skipped_images", trainer.skipped_images, done)

    def after_evaluation(self, iteration: int, summary: dict[str, Any] | None) -> None:
        if summary is None:
            return
        done = iteration + 1
        headline = {k: summary[k] for k in HEADLINE_METRICS if k in summary}
        tqdm.write(f"iteration {done}: " + " ".join(f"{k} {v:.4f}" for k, v in headline.items())
                   + (" (EMA weights)" if self.trainer.ema is not None else ""))
        self.write({"iteration": done, **{f"eval/{k}": v for k, v in summary.items()}})
        for tag, value in {**scalars(summary), **per_class_scalars(summary)}.items():
            self.tensorboard.add_scalar(tag, value, done)
        for name, path in figures(summary).items():
            self.tensorboard.add_image(f"eval_figures/{name}", read_png(path), done, dataformats="HWC")

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def after_train(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
