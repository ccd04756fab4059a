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
# configs/sweeps/ holds od2 sweep's specs (tests/tools/test_sweep.py loads every config they name)
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")
                 if p.relative_to(REPO / "configs").parts[0] != "sweeps")
TRAIN = "every_config_digits_train"

# Small input and batch so that even the ResNet-50 rows take a few seconds on 2 CPU cores; random backbones (the COCO
# rows name torchvision's ImageNet weights, which tests never download).
SMOKE = [
    "MODEL.DEVICE=cpu", "MODEL.WEIGHTS=", f"DATASETS.TRAIN=[{TRAIN}]", "DATASETS.TEST=[]", "INPUT.MIN_SIZE_TRAIN=[128]",
    "INPUT.MAX_SIZE_TRAIN=160", "SOLVER.MAX_ITER=2", "SOLVER.IMS_PER_BATCH=2", "SOLVER.WARMUP_ITERS=1",
    "SOLVER.CHECKPOINT_PERIOD=0", "TEST.EVAL_PERIOD=0", "DATALOADER.NUM_WORKERS=0", "LOG_PERIOD=1",
    "MODEL.WEIGHTS=",  # offline: configs that name published weights (torchvision://...) start from scratch here
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
    assert model.WEIGHTS == IMAGENET_WEIGHTS["resnet"]
    assert (solver.BASE_LR, solver.WARMUP_ITERS, solver.MAX_ITER, solver.CLIP_NORM) == (0.02, 1000, 120000, 32.0)
    assert list(solver.STEPS) == [80000, 100000] and model.RETINANET.SMOOTH_L1_LOSS_BETA == 1.0
    if decay == "cosine":
        assert solver.MIN_LR == pytest.approx(1e-6)
    assert cfg.OUTPUT_DIR.endswith(name)
    assert (cfg.INPUT.DATAPROCESS, cfg.INPUT.STITCH) == LOG_ROW_DATA.get(row, ("coco", 0.0))
    assert not cfg.INPUT.STITCHER.ENABLED


# Architecture rows (original-spec §12-§16): (config, backbone, MAKE_C6C7, neck, neck section, neck norm, neck
# activation, neck channels, head convs, LR decay, batch padding multiple)
ARCH_ROWS = {
    11: ("RetinaNet-TwoWayFPN-EvoNormS-GIoU", "resnet", "C6C7", "twoway_fpn", "TWOWAYFPN", "EvoNormS0", "NA", 256, 4,
         "piecewise", 32),
    12: ("RetinaNet-PConv-EvoNormS-GIoU", "resnet", "C6C7", "pconv", "PCONV", "EvoNormS0", "NA", 256, 1,
         "piecewise", 32),
    13: ("RetinaNet-MobileNetV3-EvoNormS-GIoU", "mobilenet_v3_large", "", "fpn", "FPN", "EvoNormS0", "NA", 256, 4,
         "piecewise", 32),
    14: ("EfficientDet-D0", "efficientnet_b0", "C6C7", "bifpn", "BIFPN", "GN", "swish", 64, 3, "cosine", 128),
    15: ("EfficientDet-D0-R50", "resnet", "C6C7", "bifpn", "BIFPN", "GN", "swish", 96, 3, "cosine", 128),
}
C6C7_SECTION = {"resnet": "RESNETS", "mobilenet_v3_large": "MOBILENETS", "efficientnet_b0": "EFFICIENTNETS"}
# The torchvision ImageNet weights each row's backbone starts from (its depth is 50 in every ResNet row).
IMAGENET_WEIGHTS = {"resnet": "torchvision://ResNet50_Weights.IMAGENET1K_V1",
                    "mobilenet_v3_large": "torchvision://MobileNet_V3_Large_Weights.IMAGENET1K_V1",
                    "efficientnet_b0": "torchvision://EfficientNet_B0_Weights.IMAGENET1K_V1"}


@pytest.mark.parametrize("row", list(ARCH_ROWS))
def test_architecture_row_configs_match_the_log(row):
    name, backbone, c6c7, neck, section, norm, act, channels, head_convs, decay, align = ARCH_ROWS[row]
    cfg = load_config(REPO / "configs" / "coco" / f"{name}.yaml")
    model, solver = cfg.MODEL, cfg.SOLVER
    assert (model.BACKBONE.NAME, model.BACKBONE.NORM) == (backbone, "FrozenBN")
    assert model.WEIGHTS == IMAGENET_WEIGHTS[backbone] and model.RESNETS.DEPTH == 50
    extra = model[C6C7_SECTION[backbone]]
    assert extra.MAKE_C6C7 == c6c7
    if c6c7:
        assert (extra.OUT_CHANNELS, extra.NORM, extra.ACTIVATION_FN) == (256, "EvoNormS0", "NA")
        assert list(model[section].IN_FEATURES) == ["C3", "C4", "C5", "C6", "C7"]
    neck_cfg = model[section]
    assert (model.NECK.NAME, neck_cfg.NORM, neck_cfg.ACTIVATION_FN, neck_cfg.OUT_CHANNELS) == (neck, norm, act,
                                                                                             channels)
    assert (model.RETINANET.NUM_CONVS, model.RETINANET.NORM, model.RETINANET.ACTIVATION_FN) == (head_convs,
                                                                                               "EvoNormS0", "NA")
    assert not model.RETINANET.SEPARABLE_CONV and model.RETINANET.BBOX_REG_LOSS_TYPE == "giou"
    assert list(model.RETINANET.IN_FEATURES) == ["P3", "P4", "P5", "P6", "P7"]
    assert (solver.LR_DECAY_TYPE, solver.IMS_PER_BATCH, solver.BASE_LR, solver.MAX_ITER) == (decay, 4, 0.02, 120000)
    assert cfg.INPUT.SIZE_DIVISIBILITY == align and cfg.INPUT.MIN_SIZE_TEST == 576
    if neck == "twoway_fpn":
        assert neck_cfg.FUSE_TYPE == "wsum"
    if neck == "pconv":
        assert neck_cfg.NUM_CONVS == 3
    if neck == "bifpn":
        assert neck_cfg.REPEAT == 3 and not neck_cfg.SEPARABLE_CONV and neck_cfg.DOWNSAMPLE_KERNEL == 2
    assert cfg.OUTPUT_DIR.endswith(name)
    assert (cfg.INPUT.DATAPROCESS, cfg.INPUT.STITCH) == ("coco", 0.0)
