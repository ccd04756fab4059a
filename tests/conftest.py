"""Fixtures shared across test folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from od2.config import load_config
from od2.modeling.build import build_model

DIGITS_CONFIG = Path(__file__).resolve().parents[1] / "configs/digits/retinanet_lite0.yaml"


@pytest.fixture(scope="module")
def confident_model():
    """The digits demo model (10 classes, random head) with its class prior raised to 0.5, so that random weights
    give the maximum number of detections per image to compare between inference paths."""
    torch.manual_seed(0)
    model = build_model(load_config(DIGITS_CONFIG), 10).eval()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(0.0)
    return model
