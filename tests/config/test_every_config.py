"""Every config file under configs/ loads, builds and trains a few iterations on a tiny digits set; the COCO
log-row configs say what ../shared/reference/seed-rows.md says they do."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from od2.config import load_config
from od2.data.catalog import register_coco_instances
from od2.data.datasets.digits import ensure_digits
from od2.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml"))
TRAIN = "every_config_digits_train"

# Small input and batch so that even the ResNet-50 rows take a few seconds on 2 CPU cores.
SMOKE = [
    "MODEL.DEVICE=cpu", f"DATASETS.TRAIN=[{TRAIN}]", "DATASETS.TEST=[]", "INPUT.MIN_SIZE_TRAIN=[128]",
    "INPUT.MAX_SIZE_TRAIN=160", "SOLVER.MAX_ITER=2", "SOLVER.IMS_PER_BATCH=2", "SOLVER.WARMUP_ITERS=1",
    "SOLVER.CHECKPOINT_PERIOD=0", "TEST.EVAL_PERIOD=0", "DATALOADER.NUM_WORKERS=0", "LOG_PERIOD=1",
]


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory) -> str:
    paths = ensure_digits(tmp_path_factory.mktemp("every_config_data"), num_train=8, num_val=2, seed=5)
    try:
        register_coco_instances(TRAIN, paths["train"].json_file, paths["train"].image_root)
    except ValueError:  # already registered in this session
        pass
    return TRAIN


def test_configs_found():
    assert "configs/coco/RetinaNet-EvoNormS-GIoU-cosine.yaml" in CONFIGS and len(CONFIGS) >= 10


@pytest.mark.parametrize("config", CONFIGS)
def test_config_trains_a_few_iterations(config, tiny_digits, tmp_path):
    cfg = load_config(REPO / config, SMOKE + [f"OUTPUT_DIR={tmp_path}"])
    Trainer(cfg).train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert all(math.isfinite(r["total_loss"]) and r["loss_box_reg"] > 0 for r in records)
    assert (tmp_path / "model_final.pth").is_file()


# row: (config, FPN norm, head norm, activation after them, box loss, LR decay, images per process)
LOG_ROWS = {
    1: ("RetinaNet-BN", "GN", "BN", "relu", "smooth_l1", "piecewise", 4),
    3: ("RetinaNet-BN-FPNBN", "BN", "BN", "relu", "smooth_l1", "piecewise", 2),
    4: ("RetinaNet-GN", "GN", "GN", "relu", "smooth_l1", "piecewise", 4),
    5: ("RetinaNet-EvoNormS", "EvoNormS0", "EvoNormS0", "NA", "smooth_l1", "piecewise", 4),
    7: ("RetinaNet-EvoNormS-GIoU", "EvoNormS0", "EvoNormS0", "NA", "giou", "piecewise", 4),
    8: ("RetinaNet-EvoNormS-GIoU-cosine", "EvoNormS0", "EvoNormS0", "NA", "giou", "cosine", 4),
    9: ("RetinaNet-EvoNormS-GIoU-AA", "EvoNormS0", "EvoNormS0", "NA", "giou", "piecewise", 4),
    10: ("RetinaNet-EvoNormS-GIoU-Stitch", "EvoNormS0", "EvoNormS0", "NA", "giou", "piecewise", 4),
    "WAA": ("RetinaNet-EvoNormS-GIoU-WAA-cosine", "EvoNormS0", "EvoNormS0", "NA", "giou", "cosine", 4),
    "WAA+Stitch": ("RetinaNet-EvoNormS-GIoU-WAA-Stitch-cosine", "EvoNormS0", "EvoNormS0", "NA", "giou", "cosine", 4),
    16: ("RetinaNet-SN-GIoU", "SN", "SN", "relu", "giou", "piecewise", 4),
}


# The data pipeline of each row (INPUT.DATAPROCESS, INPUT.STITCH); rows not listed use the plain one.
LOG_ROW_DATA = {9: ("AA", 0.0), 10: ("coco", 0.5), "WAA": ("WAA", 0.0), "WAA+Stitch": ("WAA", 0.5)}


@pytest.mark.parametrize("row", list(LOG_ROWS))
def test_log_row_configs_match_the_log(row):
    name, fpn_norm, head_norm, act, loss, decay, batch = LOG_ROWS[row]
    cfg = load_config(REPO / "configs" / "coco" / f"{name}.yaml")
    model, solver = cfg.MODEL, cfg.SOLVER
    assert (model.FPN.NORM, model.RETINANET.NORM) == (fpn_norm, head_norm)
    assert model.FPN.ACTIVATION_FN == model.RETINANET.ACTIVATION_FN == act
    assert model.RETINANET.BBOX_REG_LOSS_TYPE == loss
    assert (solver.LR_DECAY_TYPE, solver.IMS_PER_BATCH) == (decay, batch)
    # the recipe every row shares (original-spec §16)
    assert (model.BACKBONE.NAME, model.RESNETS.DEPTH, model.BACKBONE.NORM) == ("resnet", 50, "FrozenBN")
    assert (solver.BASE_LR, solver.WARMUP_ITERS, solver.MAX_ITER, solver.CLIP_NORM) == (0.02, 1000, 120000, 32.0)
    assert list(solver.STEPS) == [80000, 100000] and model.RETINANET.SMOOTH_L1_LOSS_BETA == 1.0
    if decay == "cosine":
        assert solver.MIN_LR == pytest.approx(1e-6)
    assert cfg.OUTPUT_DIR.endswith(name)
    assert (cfg.INPUT.DATAPROCESS, cfg.INPUT.STITCH) == LOG_ROW_DATA.get(row, ("coco", 0.0))
    assert not cfg.INPUT.STITCHER.ENABLED
