"""MODEL.WEIGHTS=torchvision://<Enum>.<member> for every torchvision backbone od2 builds: each named weight loads
every backbone tensor, with no key missing and none unused but the classifier's.

torchvision's classifier is built with random weights and saved in a temporary torch hub cache at the file name of
the enum member's URL, where a real download would put it; no network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from od2.config import load_config
from od2.engine.setup import load_initial_weights
from od2.modeling.build import build_model

# weights name -> (torchvision classifier, the key prefixes only its classification head uses, od2 config overrides
# of a small model). EfficientNet-B0's features.8 (1x1 conv 320 -> 1280 + BN) feeds only the pooled classifier: od2
# taps C5 before it (320 channels, as the original).
SMALL_HEAD = ["MODEL.FPN.OUT_CHANNELS=16", "MODEL.RETINANET.NUM_CONVS=1"]
NAMED_WEIGHTS = {
    "ResNet18_Weights.IMAGENET1K_V1": (torchvision.models.resnet18, ("fc.",), ["MODEL.RESNETS.DEPTH=18"]),
    "ResNet34_Weights.IMAGENET1K_V1": (torchvision.models.resnet34, ("fc.",), ["MODEL.RESNETS.DEPTH=34"]),
    "ResNet50_Weights.IMAGENET1K_V1": (torchvision.models.resnet50, ("fc.",), ["MODEL.RESNETS.DEPTH=50"]),
    "ResNet101_Weights.IMAGENET1K_V1": (torchvision.models.resnet101, ("fc.",), ["MODEL.RESNETS.DEPTH=101"]),
    "MobileNet_V3_Large_Weights.IMAGENET1K_V1": (torchvision.models.mobilenet_v3_large, ("classifier.",),
                                                 ["MODEL.BACKBONE.NAME=mobilenet_v3_large"]),
    "EfficientNet_B0_Weights.IMAGENET1K_V1": (torchvision.models.efficientnet_b0, ("features.8.", "classifier."),
                                              ["MODEL.BACKBONE.NAME=efficientnet_b0"]),
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if "101" in name else name
                                  for name in NAMED_WEIGHTS])  # ResNet-101: 170 MB written and read, ~14 s
def test_a_torchvision_weights_name_loads_every_backbone_tensor(name, tmp_path, monkeypatch):
    constructor, classifier_only, overrides = NAMED_WEIGHTS[name]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("no download expected"))
    enum_name, member = name.split(".")
    url = getattr(torchvision.models, enum_name)[member].url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    source = constructor(weights=None)
    with torch.no_grad():  # statistics unlike a fresh BatchNorm's, so that loading them shows
        for module in source.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2)
    saved = source.state_dict()
    torch.save(saved, cached)
    del source

    model = build_model(load_config(None, overrides + SMALL_HEAD), 3)
    reports = load_initial_weights(model, f"torchvision://{name}")

    report = reports["backbone"]
    body = model.backbone.state_dict()
    expected = sorted(key for key in body if not key.endswith("num_batches_tracked"))
    assert list(reports) == ["backbone"] and report.prefix == ""
    assert report.loaded == expected and report.missing == [] and report.mismatched == []
    unused = [key for key in saved if key.startswith(classifier_only) and not key.endswith("num_batches_tracked")]
    assert report.unexpected == unused != []
    for key in expected:
        torch.testing.assert_close(body[key], saved[key], rtol=0, atol=0, msg=key)
