"""The trainer's total of training images that failed to decode after the dataset's load check and were replaced:
in metrics.jsonl (``data/skipped_images``), in every checkpoint (a resume keeps counting) and in a line at the end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_hooks import QUICK
from test_train_e2e import tiny_cfg

from od2.data.catalog import register_coco_instances
from od2.data.datasets.digits import ensure_digits
from od2.engine.checkpoint import load_checkpoint
from od2.engine.trainer import Trainer

REPLACED = "training skips an image"  # the loader's warning for each replaced draw


@pytest.mark.slow  # three trainers (about 15 s of CPU)
def test_images_corrupted_after_the_load_check_are_counted_in_metrics_checkpoints_and_the_log(tmp_path, caplog):
    split = ensure_digits(tmp_path / "data", num_train=4, num_val=2, seed=5)["train"]
    name = f"skipcount_{tmp_path.name}"
    register_coco_instances(name, split.json_file, split.image_root)
    # 4 images, 2 per batch, 2 steps: one epoch, so the broken image is drawn (at least) once.
    cfg = tiny_cfg(tmp_path / "run", *QUICK, f"DATASETS.TRAIN=[{name}]", "DATASETS.TEST=[]", "SOLVER.MAX_ITER=2",
                   "SOLVER.CHECKPOINT_PERIOD=1")
    broken = Path(sorted(Path(split.image_root).iterdir())[0])
    whole = broken.read_bytes()
    trainer = Trainer(cfg)  # the load check passed every image
    broken.write_bytes(whole[:150])
    with caplog.at_level(logging.INFO):
        trainer.train()
    replaced = sum(REPLACED in r.getMessage() for r in caplog.records)
    assert replaced >= 1 and trainer.skipped_images == replaced
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    totals = [r["data/skipped_images"] for r in records if "total_loss" in r]
    assert len(totals) == 2 and totals == sorted(totals) and totals[-1] == replaced  # a running total
    assert load_checkpoint(tmp_path / "run" / "model_final.pth")["skipped_images"] == replaced
    assert f"{replaced} training image" in caplog.records[-1].getMessage()  # the line at the end

    # A resume from iteration 1 starts from that checkpoint's total: the replayed draws are not counted twice.
    assert load_checkpoint(tmp_path / "run" / "model_0000001.pth")["skipped_images"] == totals[0]
    (tmp_path / "run" / "last_checkpoint").write_text("model_0000001.pth")
    broken.write_bytes(whole)  # whole again for the resumed run's load check, broken again once it passed
    resumed = Trainer(cfg)
    broken.write_bytes(whole[:150])
    resumed.train(resume=True)
    assert resumed.skipped_images == replaced
