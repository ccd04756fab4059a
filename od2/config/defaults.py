"""Typed defaults for every od2 config key but the backbones' and necks' own sections.

The type of each default is the type a config file may give the key: an int default accepts ints, a float
default accepts ints and floats, a list/tuple default accepts a list (its items checked against the
default's first item when there is one). Key names follow detectron2 and the original object_detection2
(see ../../README.md "Config keys" and docs/config.md for what each one means).

The section of each backbone family (MODEL.RESNETS, MODEL.EFFICIENTNETS, ...) and of each neck (MODEL.FPN,
MODEL.BIFPN, ...) belongs to its registration in od2.modeling (od2/modeling/registration.py);
:func:`od2.config.get_cfg` inserts them after MODEL.BACKBONE and MODEL.NECK.
"""

from __future__ import annotations

from typing import Any

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
        "SKIP_CROWD_DURING_TRAINING": True,
    },
    "DATALOADER": {
        "NUM_WORKERS": 2,
        "ASPECT_RATIO_GROUPING": True,
        "BAD_IMAGES": "skip",  # skip | error: what the integrity check and the loaders do with an unreadable image
        "MAX_BAD_IMAGE_SHARE": 0.1,  # more bad images than this share of a dataset stops loading with a report
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
    },
    "TEST": {
        "EVAL_PERIOD": 0,
        "DETECTIONS_PER_IMAGE": 100,
        "IMS_PER_BATCH": 1,
        # CPU inference by Winograd F(4x4, 3x3) (od2.layers.winograd.convert_to_winograd) in od2 eval / predict
        "WINOGRAD": False,
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
