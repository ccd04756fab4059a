"""build_model's translation of the norm keys: EvoNorm-S0 replaces the activation, and the user is told."""

from __future__ import annotations

import logging

import torch.nn as nn

from od2.config import load_config
from od2.layers.evonorm import EvoNormS0
from od2.modeling.build import build_model

SMALL = ["MODEL.RESNETS.DEPTH=18", "MODEL.FPN.OUT_CHANNELS=32", "MODEL.RETINANET.NUM_CONVS=1"]


def test_evonorm_with_an_activation_warns_and_applies_none(caplog):
    cfg = load_config(None, SMALL + ["MODEL.RETINANET.NORM=EvoNormS0", "MODEL.RETINANET.ACTIVATION_FN=relu"])
    with caplog.at_level(logging.WARNING, logger="od2.modeling.build"):
        model = build_model(cfg, 3)
    assert "MODEL.RETINANET.ACTIVATION_FN 'relu' is not applied" in caplog.text
    assert "MODEL.FPN" not in caplog.text  # the FPN has no EvoNorm here
    blocks = model.head.cls_tower.norm_acts[0]
    assert all(isinstance(b.norm, EvoNormS0) and isinstance(b.act, nn.Identity) for b in blocks)


def test_evonorm_with_na_is_silent(caplog):
    cfg = load_config(None, SMALL + ["MODEL.FPN.NORM=EvoNormS0", "MODEL.FPN.ACTIVATION_FN=NA"])
    with caplog.at_level(logging.WARNING, logger="od2.modeling.build"):
        model = build_model(cfg, 3)
    assert not caplog.text
    assert isinstance(model.neck.output[0].norm_act.norm, EvoNormS0)
