"""``python -m tests.engine.run_killed DIGITS_ROOT MOMENT <od2 args...>``: run the od2 command line with the e2e
test's digits datasets registered (as run_registered.py) and SIGKILL this process at one exact MOMENT of training.

A real ``kill -9``: no handler, no ``finally`` and no atexit runs, and half-written files stay as they are. The
process kills itself so the moment is exact on any machine (a test polling from outside would race a fast step):

- ``step:N``        after step N's optimizer update, before its hooks (metrics, checkpoint) ran
- ``save:NAME``     while writing checkpoint NAME: half of its bytes are in the temporary file, none renamed
- ``pointer:NAME``  checkpoint NAME is in place, ``last_checkpoint`` still names the one before
- ``metrics:N``     halfway through writing the metrics.jsonl record of iteration N (a torn last line)

A suffix ``@R`` (``step:2@1``) kills only the process of rank R of a torchrun launch; the others run on. With
``KILLED_AT_FILE`` in the environment, the process writes the time of its kill (``time.time()``) there first.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

import od2.engine.checkpoint as checkpoint
from od2.cli import main
from od2.data.catalog import register_coco_instances
from od2.engine.hooks import MetricsWriter
from od2.engine.trainer import Trainer


def die() -> None:
    if "KILLED_AT_FILE" in os.environ:
        Path(os.environ["KILLED_AT_FILE"]).write_text(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_step(iteration: int) -> None:
    step = Trainer.step

    def step_then_die(self, it, batch):
        losses = step(self, it, batch)
        if it == iteration:
            die()
        return losses

    Trainer.step = step_then_die


def kill_while_saving(name: str) -> None:
    save = torch.save

    def save_half_then_die(obj, file, *args, **kwargs):
        target = Path(getattr(file, "name", str(file))).name
        if not target.startswith(f".{name}."):  # atomic_write's temporary for NAME
            return save(obj, file, *args, **kwargs)
        whole = io.BytesIO()
        save(obj, whole, *args, **kwargs)
        file.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        file.flush()
        os.fsync(file.fileno())
        die()

    torch.save = save_half_then_die


def kill_before_pointing(name: str) -> None:
    point = checkpoint.point_last_checkpoint

    def die_before_pointing(output_dir, pointed):
        if pointed == name:
            die()
        point(output_dir, pointed)

    checkpoint.point_last_checkpoint = die_before_pointing


def kill_mid_metrics(iteration: int) -> None:
    write = MetricsWriter.write

    def write_half_then_die(self, record):
        if record.get("iteration") == iteration and "total_loss" in record:
            line = json.dumps(record) + "\n"
            self.file.write(line[: len(line) // 2])
            self.file.flush()
            die()
        write(self, record)

    MetricsWriter.write = write_half_then_die


MOMENTS = {"step": lambda arg: kill_after_step(int(arg)), "save": kill_while_saving,
           "pointer": kill_before_pointing, "metrics": lambda arg: kill_mid_metrics(int(arg))}

if __name__ == "__main__":
    root = Path(sys.argv[1]) / "digits"
    for split in ("train", "val"):
        register_coco_instances(f"e2e_digits_{split}", root / "annotations" / f"{split}.json", root / split)
    moment, _, rank = sys.argv[2].partition("@")
    if not rank or rank == os.environ.get("RANK"):
        kind, _, argument = moment.partition(":")
        MOMENTS[kind](argument)
    sys.exit(main(sys.argv[3:]))
