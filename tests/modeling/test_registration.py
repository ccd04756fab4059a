"""Backbone and neck registrations: each satisfies its protocol with the shapes it declares, owns its config section,
and a new backbone is one registration away from being built by a config."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from od2.config import CfgNode, ConfigError, get_cfg, load_config, schema
from od2.modeling import Backbone, BackboneWithExtraLevels, Neck
from od2.modeling.backbones import BACKBONES
from od2.modeling.backbones.extra_levels import C6C7_DEFAULTS
from od2.modeling.build import build_model
from od2.modeling.necks import NECKS
from od2.modeling.registration import BackboneEntry, ConfigSection, NeckEntry, unique_sections

H, W = 65, 97  # odd sizes: every level rounds up


def level_size(stride: int) -> tuple[int, int]:
    return math.ceil(H / stride), math.ceil(W / stride)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registered_backbone_satisfies_its_protocol(name):
    entry = BACKBONES[name]
    section = get_cfg().MODEL[entry.section.name]
    backbone = entry.build(section, nn.BatchNorm2d, 0, False).eval()
    assert isinstance(backbone, Backbone) and isinstance(backbone, entry.constructor)
    assert len(backbone.pixel_mean) == len(backbone.pixel_std) == 3
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, H, W))
    assert list(out) == list(backbone.out_channels) == list(backbone.strides)
    for level, features in out.items():
        assert backbone.strides[level] == 2 ** int(level[1:])
        assert features.shape == (1, backbone.out_channels[level], *level_size(backbone.strides[level]))
    assert isinstance(BackboneWithExtraLevels(backbone, 2), Backbone)


@pytest.mark.parametrize("name", sorted(NECKS))
def test_every_registered_neck_satisfies_its_protocol(name):
    entry = NECKS[name]
    section = get_cfg().MODEL[entry.section.name]
    in_channels = {level: 8 * (i + 1) for i, level in enumerate(section.IN_FEATURES)}
    neck = entry.build(section, in_channels, 1 if entry.makes_levels else 0).eval()
    assert isinstance(neck, Neck) and isinstance(neck, entry.constructor)
    assert neck.in_features == list(section.IN_FEATURES)
    features = {c: torch.randn(1, n, *level_size(2 ** int(c[1:]))) for c, n in in_channels.items()}
    with torch.no_grad():
        out = neck(features)
    assert list(out) == neck.out_features == list(neck.out_channels) == list(neck.strides)
    assert len(out) == len(in_channels) + (1 if entry.makes_levels else 0)
    for level, maps in out.items():
        assert neck.strides[level] == 2 ** int(level[1:])
        assert maps.shape == (1, neck.out_channels[level], *level_size(neck.strides[level]))


def test_each_registration_owns_its_config_section_and_defaults():
    model = get_cfg().MODEL
    for entry in [*BACKBONES.values(), *NECKS.values()]:
        assert model[entry.section.name] == dict(entry.section.defaults), entry.name
    # the log's families, as the original names their sections
    assert {e.section.name for e in BACKBONES.values()} == {"RESNETS", "EFFICIENTNETS", "MOBILENETS"}
    assert [e.section.name for e in NECKS.values()] == ["FPN", "TWOWAYFPN", "PCONV", "BIFPN"]
    assert model.RESNETS == {"DEPTH": 50, "MAKE_C6C7": "", "OUT_CHANNELS": 256, "NORM": "EvoNormS0",
                             "ACTIVATION_FN": "NA"}


def test_two_registrations_of_one_section_must_agree():
    section_a, section_b = ConfigSection("NETS", {"MAKE_C6C7": ""}), ConfigSection("NETS", {"MAKE_C6C7": "C6"})
    same = [BackboneEntry("a", nn.Identity, section_a, None), BackboneEntry("b", nn.Identity, section_a, None)]
    assert unique_sections(same) == {"NETS": {"MAKE_C6C7": ""}}
    with pytest.raises(ValueError, match="'b' registers section MODEL.NETS"):
        unique_sections([same[0], BackboneEntry("b", nn.Identity, section_b, None)])


class TinyBackbone(nn.Module):
    """Two stride-2 convs per level: C3..C5 of ``width`` channels."""

    pixel_mean = (0.0, 0.0, 0.0)
    pixel_std = (255.0, 255.0, 255.0)

    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Sequential(*(nn.Conv2d(3 if i == 0 else width, width, 3, 2, 1) for i in range(3)))
        self.levels = nn.ModuleList(nn.Conv2d(width, width, 3, 2, 1) for _ in range(2))
        self.out_channels = {"C3": width, "C4": width, "C5": width}
        self.strides = {"C3": 8, "C4": 16, "C5": 32}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c3 = self.stem(x)
        c4 = self.levels[0](c3)
        return {"C3": c3, "C4": c4, "C5": self.levels[1](c4)}


@pytest.fixture
def fresh_schema():
    schema.cache_clear()
    yield
    schema.cache_clear()


def test_a_new_backbone_is_one_registration(monkeypatch, fresh_schema):
    def build(section: CfgNode, norm_layer, freeze_at: int, pretrained: bool) -> TinyBackbone:
        return TinyBackbone(section.WIDTH)

    entry = BackboneEntry("tiny", TinyBackbone, ConfigSection("TINYNETS", {"WIDTH": 8, **C6C7_DEFAULTS}), build)
    monkeypatch.setitem(BACKBONES, "tiny", entry)
    schema.cache_clear()
    cfg = load_config(None, ["MODEL.BACKBONE.NAME=tiny", "MODEL.TINYNETS.WIDTH=16", "MODEL.FPN.OUT_CHANNELS=16",
                             "MODEL.RETINANET.NUM_CONVS=1"])
    assert list(cfg.MODEL).index("TINYNETS") == list(cfg.MODEL).index("BACKBONE") + 4  # after the 3 others
    model = build_model(cfg, 2).eval()
    assert isinstance(model.backbone, TinyBackbone) and model.backbone.out_channels["C5"] == 16
    with torch.no_grad():
        (detections,) = model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), torch.tensor([[64, 64]]))
    assert set(detections) == {"boxes", "scores", "labels"}
    with pytest.raises(ConfigError, match="MODEL.TINYNETS.WIDHT"):
        load_config(None, ["MODEL.TINYNETS.WIDHT=4"])


def test_a_neck_section_may_not_take_a_name_od2_uses(monkeypatch, fresh_schema):
    fpn = NECKS["fpn"]
    clash = NeckEntry("fpn2", fpn.constructor, ConfigSection("RETINANET", {}), fpn.build, fpn.makes_levels)
    monkeypatch.setitem(NECKS, "fpn2", clash)
    with pytest.raises(ValueError, match=r"\['RETINANET'\] clash"):
        get_cfg()
