"""Typed defaults for every od2 config key but the backbones' and necks' own sections.

The type of each default is the type a config file may give the key: an int default accepts ints, a float
default accepts ints and floats, a list/tuple default accepts a list (its items checked against the
default's first item, or against :data:`LIST_ITEM_TYPES` where the default is empty). :data:`VALUE_RANGES` says
where a number (or each number of a list) must lie; loading checks it. Key names follow detectron2 and the
original object_detection2 (see ../../README.md "Config keys" and docs/config.md for what each one means).

The section of each backbone family (MODEL.RESNETS, MODEL.EFFICIENTNETS, ...) and of each neck (MODEL.FPN,
MODEL.BIFPN, ...) belongs to its registration in od2.modeling (od2/modeling/registration.py);
:func:`od2.config.get_cfg` inserts them after MODEL.BACKBONE and MODEL.NECK.
"""

from __future__ import annotations

from typing import Any

from .value_range import PROBABILITY, ValueRange, above, at_least

# Anchor sizes of the log: 32 * 2^(k/3) per level, P3..P7 (original-spec §3.5).
LOG_ANCHOR_SIZES = [[round(32 * 2 ** (level + k / 3), 3) for k in range(3)] for level in range(5)]

DEFAULTS: dict[str, Any] = {
    "MODEL": {
        "META_ARCHITECTURE": "RetinaNet",
        "DEVICE": "auto",
        "WEIGHTS": "",
        "PIXEL_MEAN": [],
        "PIXEL_STD": [],
        "CHANNELS_LAST": True,
        # torch.compile of the training forward of backbone, neck and head (od2.engine.compile): "" (off),
        # default, max-autotune or max-autotune-no-cudagraphs; COMPILE_BACKEND: a torch.compile backend
        "COMPILE": "",
        "COMPILE_BACKEND": "inductor",
        "EMA": {
            "ENABLED": False,
            "DECAY": 0.9998,
            "WARMUP": True,
        },
        "BACKBONE": {
            "NAME": "resnet",
            "FREEZE_AT": 0,
            "NORM": "FrozenBN",
            "PRETRAINED": False,
        },
        "NECK": {"NAME": "fpn"},
        "ANCHOR_GENERATOR": {
            "SIZES": LOG_ANCHOR_SIZES,
            "ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
            "OFFSET": 0.5,
            "ROUND": False,
        },
        "RETINANET": {
            "NUM_CLASSES": 0,
            "IN_FEATURES": ["P3", "P4", "P5", "P6", "P7"],
            "NUM_CONVS": 4,
            "SEPARABLE_CONV": False,
            "NORM": "",
            "ACTIVATION_FN": "relu",
            "IOU_THRESHOLDS": [0.4, 0.5],
            "ALLOW_LOW_QUALITY_MATCHES": True,
            "PRIOR_PROB": 0.01,
            "FOCAL_LOSS_ALPHA": 0.25,
            "FOCAL_LOSS_GAMMA": 2.0,
            "SMOOTH_L1_LOSS_BETA": 1.0,
            "BBOX_REG_LOSS_TYPE": "smooth_l1",
            "BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
            "BOX_REG_LOSS_SCALE": 1.0,
            "SCORE_THRESH_TEST": 0.05,
            "TOPK_CANDIDATES_TEST": 1000,
            "NMS_THRESH_TEST": 0.5,
        },
    },
    "INPUT": {
        "MIN_SIZE_TRAIN": [512, 544, 576, 608, 640],
        "MAX_SIZE_TRAIN": 800,
        "MIN_SIZE_TEST": 576,
        "MAX_SIZE_TEST": 1333,
        "RANDOM_FLIP": 0.5,
        "SIZE_DIVISIBILITY": 32,
        "MAX_IMAGE_PIXELS": 89_478_485,  # PIL's MAX_IMAGE_PIXELS; W*H above it is refused from the header; 0: none
        "DATAPROCESS": "coco",
        "STITCH": 0.0,
        "STITCHER": {
            "ENABLED": False,
            "THRESHOLD": 0.1,
            "SMALL_AREA": 1024.0,
        },
    },
    "DATASETS": {
        "TRAIN": ["coco_2014_train"],
        "TEST": ["coco_2014_minival"],
        "ROOT": "",
        # Label order of every split; empty: the union of the TRAIN and TEST datasets' classes (od2.data.class_list).
        "CLASS_NAMES": [],
        "SKIP_CROWD_DURING_TRAINING": True,
    },
    "DATALOADER": {
        "NUM_WORKERS": 2,
        "ASPECT_RATIO_GROUPING": True,
        "BAD_IMAGES": "skip",  # skip | error: what the integrity check and the loaders do with an unreadable image
        "MAX_BAD_IMAGE_SHARE": 0.1,  # more bad images than this share of a dataset stops loading with a report
        # page-locked batches for fast, non-blocking host-to-device copies: auto (on when MODEL.DEVICE is cuda),
        # always, never
        "PIN_MEMORY": "auto",
    },
    "SOLVER": {
        "IMS_PER_BATCH": 4,
        "BASE_LR": 0.02,
        "MOMENTUM": 0.9,
        "WEIGHT_DECAY": 1e-4,
        "WEIGHT_DECAY_NORM": 0.0,
        "WEIGHT_DECAY_BIAS": -1.0,  # negative: the same as WEIGHT_DECAY (detectron2's None)
        "LR_DECAY_TYPE": "piecewise",
        "STEPS": [80000, 100000],
        "GAMMA": 0.1,
        "MAX_ITER": 120000,
        "MIN_LR": 1e-6,
        "WARMUP_ITERS": 1000,
        "WARMUP_FACTOR": 0.0,
        "CLIP_NORM": 32.0,
        "CHECKPOINT_PERIOD": 5000,
        "AMP": "",
        "PATIENCE": 0,  # evaluations without improvement of TEST.BEST_METRIC before training stops; 0 = never
    },
    "TEST": {
        "EVAL_PERIOD": 0,
        "DETECTIONS_PER_IMAGE": 100,
        "IMS_PER_BATCH": 1,
        # CPU inference by Winograd F(4x4, 3x3) (od2.layers.winograd.convert_to_winograd) in od2 eval / predict
        "WINOGRAD": False,
        # torch.compile mode of the inference model ("" off, default, reduce-overhead = CUDA graphs, max-autotune);
        # the test loader then pads every batch to one square canvas of INPUT.MAX_SIZE_TEST (docs/performance.md)
        "COMPILE": "",
        # Score threshold of the evaluation's confusion matrix (eval/confusion_matrix.*): od2 predict's default
        "CONFUSION_SCORE_THRESH": 0.3,
        # model_best.pth keeps the weights of the evaluation with the best value of this coco_summary.json key
        # ("" = no best checkpoint); BEST_MODE: max, min, or auto (min for keys holding "loss", max otherwise)
        "BEST_METRIC": "AP",
        # evaluations also report the training losses on the test set (loss_cls, loss_box_reg, total_loss)
        "VAL_LOSS": True,
        # training's evaluations draw their detections on this many test images (eval/predictions.png, TensorBoard)
        "VIS_IMAGES": 4,
        "BEST_MODE": "auto",
        # Test-time augmentation in od2 eval (od2.evaluation.tta): every size of MIN_SIZES (empty: INPUT.MIN_SIZE_TEST)
        # and, with FLIP, its horizontal flip, merged by class-wise NMS at MODEL.RETINANET.NMS_THRESH_TEST. MAX_SIZE:
        # the long-side cap of every size; 0 scales INPUT.MAX_SIZE_TEST by size / INPUT.MIN_SIZE_TEST.
        "AUG": {"ENABLED": False, "MIN_SIZES": [], "MAX_SIZE": 0, "FLIP": True},
        # Sliced inference in od2 eval (od2.evaluation.slicing): tiles of SIZE (h, w) original-image pixels
        # overlapping by OVERLAP of a tile, each resized as a test image, plus the whole image with FULL_IMAGE,
        # merged by greedy merging on intersection over the smaller box above MATCH_THRESH.
        "SLICE": {"ENABLED": False, "SIZE": [512, 512], "OVERLAP": 0.2, "FULL_IMAGE": True, "MATCH_THRESH": 0.5,
                  "MERGE": "nms"},  # nms: class-wise NMS of all tiles' detections; pieces: join cut pieces first
    },
    # experiment trackers beside TensorBoard (optional extras: pip install 'od2[mlflow]' / 'od2[wandb]')
    "TRACKERS": [],  # any of mlflow, wandb
    "TRACKER": {
        "MLFLOW": {"URI": "", "EXPERIMENT": "od2"},  # URI "": sqlite:///OUTPUT_DIR/mlflow.db
        "WANDB": {"PROJECT": "od2", "ENTITY": ""},  # WANDB_MODE=offline keeps the run local
    },
    "OUTPUT_DIR": "./output",
    "SEED": 42,
    "LOG_PERIOD": 20,
}

# Keys that configs and run folders' config.yaml may still hold but that od2 no longer reads: loading ignores them
# with a warning that says what replaced them.
RETIRED_KEYS: dict[str, str] = {
    "MODEL.RETINANET.WINOGRAD": "Winograd is now a test-time conversion, off unless TEST.WINOGRAD=True",
}

# The type of each item of a list key whose default is empty, so that its items are checked as others' are
# (a list default's items are checked against its first item). MODEL.PIXEL_MEAN=[a,b,c] fails at load time.
LIST_ITEM_TYPES: dict[str, type] = {
    "MODEL.PIXEL_MEAN": float,
    "MODEL.PIXEL_STD": float,
    "DATASETS.CLASS_NAMES": str,
    "TRACKERS": str,
    "TEST.AUG.MIN_SIZES": int,
}

# Where a number must lie, checked when a file or override sets it (for a list: each of its numbers, however deeply
# nested). A period or count of 0 means "off" where the key's docs say so; keys whose negative values mean something
# (FOCAL_LOSS_ALPHA < 0: no weighting, WEIGHT_DECAY_BIAS < 0: the same as WEIGHT_DECAY) are bounded only above or not
# at all. The backbones' and necks' own sections are checked by their builders.
VALUE_RANGES: dict[str, ValueRange] = {
    "MODEL.PIXEL_STD": above(0),
    "MODEL.EMA.DECAY": PROBABILITY,
    "MODEL.BACKBONE.FREEZE_AT": at_least(0),
    "MODEL.ANCHOR_GENERATOR.SIZES": above(0),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": above(0),
    "MODEL.ANCHOR_GENERATOR.OFFSET": PROBABILITY,
    "MODEL.RETINANET.NUM_CLASSES": at_least(0),
    "MODEL.RETINANET.NUM_CONVS": at_least(0),
    "MODEL.RETINANET.IOU_THRESHOLDS": PROBABILITY,
    "MODEL.RETINANET.PRIOR_PROB": ValueRange(0.0, 1.0, low_open=True, high_open=True),
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": ValueRange(high=1.0),
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": at_least(0),
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": at_least(0),
    "MODEL.RETINANET.BBOX_REG_WEIGHTS": above(0),
    "MODEL.RETINANET.BOX_REG_LOSS_SCALE": at_least(0),
    "MODEL.RETINANET.SCORE_THRESH_TEST": PROBABILITY,
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST": at_least(1),
    "MODEL.RETINANET.NMS_THRESH_TEST": PROBABILITY,
    "INPUT.MIN_SIZE_TRAIN": at_least(1),
    "INPUT.MAX_SIZE_TRAIN": at_least(1),
    "INPUT.MIN_SIZE_TEST": at_least(1),
    "INPUT.MAX_SIZE_TEST": at_least(1),
    "INPUT.RANDOM_FLIP": PROBABILITY,
    "INPUT.SIZE_DIVISIBILITY": at_least(0),
    "INPUT.STITCH": PROBABILITY,
    "INPUT.STITCHER.THRESHOLD": at_least(0),  # a share of the loss; above 1 no batch is ever a mosaic
    "INPUT.STITCHER.SMALL_AREA": at_least(0),
    "DATALOADER.NUM_WORKERS": at_least(0),
    "SOLVER.IMS_PER_BATCH": at_least(1),
    "SOLVER.BASE_LR": at_least(0),
    "SOLVER.MOMENTUM": PROBABILITY,
    "SOLVER.WEIGHT_DECAY": at_least(0),
    "SOLVER.WEIGHT_DECAY_NORM": at_least(0),
    "SOLVER.STEPS": at_least(0),
    "SOLVER.GAMMA": above(0),
    "SOLVER.MAX_ITER": at_least(1),
    "SOLVER.MIN_LR": at_least(0),
    "SOLVER.WARMUP_ITERS": at_least(0),
    "SOLVER.WARMUP_FACTOR": PROBABILITY,
    "SOLVER.CLIP_NORM": at_least(0),
    "SOLVER.CHECKPOINT_PERIOD": at_least(0),
    "SOLVER.PATIENCE": at_least(0),
    "TEST.EVAL_PERIOD": at_least(0),
    "TEST.VIS_IMAGES": at_least(0),
    "TEST.DETECTIONS_PER_IMAGE": at_least(1),
    "TEST.IMS_PER_BATCH": at_least(1),
    "TEST.AUG.MIN_SIZES": at_least(1),
    "TEST.AUG.MAX_SIZE": at_least(0),
    "TEST.SLICE.SIZE": at_least(1),
    "TEST.SLICE.OVERLAP": ValueRange(0.0, 1.0, high_open=True),
    "TEST.SLICE.MATCH_THRESH": PROBABILITY,
    "LOG_PERIOD": at_least(0),
}
