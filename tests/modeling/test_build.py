"""build_model's translation of the choice keys: EvoNorm-S0 replaces the activation (and the user is told), and a
value that is not one of a key's choices is a ConfigError when the model is built."""

from __future__ import annotations

import logging

import pytest
import torch.nn as nn

from od2.config import ConfigError, load_config
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


# A bad choice fails when the model is built, naming the key, the value and the closest allowed value; before,
# the box loss type failed only at the first training step and norms/activations with a ValueError naming no key.
BAD_CHOICES = [
    (["MODEL.RETINANET.BBOX_REG_LOSS_TYPE=gio"], "MODEL.RETINANET.BBOX_REG_LOSS_TYPE 'gio'", "giou"),
    (["MODEL.FPN.NORM=gn"], "MODEL.FPN.NORM 'gn'", "GN"),
    (["MODEL.RETINANET.NORM=EvoNorm"], "MODEL.RETINANET.NORM 'EvoNorm'", "EvoNormS0"),
    (["MODEL.BACKBONE.NORM=FrozenBatchNorm"], "MODEL.BACKBONE.NORM 'FrozenBatchNorm'", "FrozenBN"),
    (["MODEL.RESNETS.MAKE_C6C7=C6C7", "MODEL.RESNETS.NORM=SyncBNN"], "MODEL.RESNETS.NORM 'SyncBNN'", "SyncBN"),
    (["MODEL.FPN.ACTIVATION_FN=Relu"], "MODEL.FPN.ACTIVATION_FN 'Relu'", "relu"),
    (["MODEL.RETINANET.ACTIVATION_FN=swissh"], "MODEL.RETINANET.ACTIVATION_FN 'swissh'", "swish"),
    (["MODEL.NECK.NAME=bifpm"], "MODEL.NECK.NAME 'bifpm'", "bifpn"),
    (["MODEL.BACKBONE.NAME=resnett"], "MODEL.BACKBONE.NAME 'resnett'", "resnet"),
    (["MODEL.NECK.NAME=bifpn", "MODEL.BIFPN.NORM=GroupNorm"], "MODEL.BIFPN.NORM 'GroupNorm'", None),
    (["MODEL.NECK.NAME=twoway_fpn", "MODEL.TWOWAYFPN.FUSE_TYPE=wsun"], "MODEL.TWOWAYFPN.FUSE_TYPE 'wsun'", "wsum"),
    (["MODEL.RESNETS.DEPTH=152"], "MODEL.RESNETS.DEPTH 152", None),
    (["MODEL.RESNETS.MAKE_C6C7=P6P7"], "MODEL.RESNETS.MAKE_C6C7 'P6P7'", None),
]


@pytest.mark.parametrize("overrides,named,closest", BAD_CHOICES)
def test_a_bad_choice_fails_at_build_time_naming_the_key(overrides, named, closest):
    cfg = load_config(None, SMALL + overrides)
    with pytest.raises(ConfigError) as err:
        build_model(cfg, 3)
    message = str(err.value)
    assert message.startswith(named + " is not one of ["), message
    if closest:
        assert message.endswith(f"did you mean {closest!r}?"), message


def test_every_allowed_norm_and_box_loss_builds():
    for norm in ["", "BN", "SyncBN", "FrozenBN", "GN", "EvoNormS0", "SN", "SwitchNorm"]:
        build_model(load_config(None, SMALL + [f"MODEL.RETINANET.NORM={norm}", "MODEL.RETINANET.ACTIVATION_FN=NA"]),
                    3)
    for loss in ["smooth_l1", "l1", "giou", "diou", "ciou"]:
        build_model(load_config(None, SMALL + [f"MODEL.RETINANET.BBOX_REG_LOSS_TYPE={loss}"]), 3)
