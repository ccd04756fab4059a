"""Fixtures shared across test folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from od2.config import load_config
from od2.modeling.build import build_model

DIGITS_CONFIG = Path(__file__).resolve().parents[1] / "configs/digits/retinanet_lite0.yaml"
# The team's copy of BCCD next to a development checkout. Only tests look there: the library's catalog reads its
# datasets root (root=, DATASETS.ROOT, $OD2_DATASETS), so tests pass this folder as that root.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def image_check_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image integrity check's cache (od2.data.image_check) in a folder of this session, never ~/.cache."""
    folder = tmp_path_factory.mktemp("od2_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OD2_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def bccd_datasets_root() -> Path:
    """A datasets root holding ``bccd/`` (VOC layout); the test is skipped where there is none."""
    if not (SHARED_DATA / "bccd").is_dir():
        pytest.skip(f"BCCD not present at {SHARED_DATA / 'bccd'}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def confident_model():
    """The digits demo model (10 classes, random head) with its class prior raised to 0.5, so that random weights
    give the maximum number of detections per image to compare between inference paths."""
    torch.manual_seed(0)
    model = build_model(load_config(DIGITS_CONFIG), 10).eval()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(0.0)
    return model
