"""Run set-up shared by the commands: device choice, seeding, logging, initial weights."""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .checkpoint import load_checkpoint

if TYPE_CHECKING:
    from od2.modeling.backbones.utils import LoadReport

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """MODEL.DEVICE: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE={name!r} but no CUDA device is available; use MODEL.DEVICE=cpu")
    return device


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(output_dir: str | Path | None, rank: int = 0) -> None:
    """INFO to stderr (rank 0 only) and to OUTPUT_DIR/log.txt (log.rank{N}.txt for other ranks)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("[%(asctime)s %(name)s] %(levelname)s: %(message)s", "%m/%d %H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        root.addHandler(console)
    if output_dir:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        name = "log.txt" if rank == 0 else f"log.rank{rank}.txt"
        file_handler = logging.FileHandler(Path(output_dir) / name)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)


def load_initial_weights(model: torch.nn.Module, path: str) -> LoadReport:
    """MODEL.WEIGHTS: an od2 checkpoint / full-model state_dict, or a backbone state_dict.

    A file whose keys mostly start with ``backbone.``/``neck.``/``head.`` loads into the whole model; any
    other state_dict (e.g. a torchvision ResNet / MobileNetV3 / EfficientNet-B0 one) loads into the bottom-up
    backbone (``model.backbone.body`` when MAKE_C6C7 wrapped it: C6/C7 convs are not in such files). Tensors
    whose shape differs (e.g. the class predictor of a checkpoint trained on another dataset) are skipped. The
    returned report's missing, unexpected and mismatched keys are also logged.
    """
    from od2.modeling.backbones.utils import load_matching_state_dict

    state = load_checkpoint(path)["model"]
    whole = sum(k.split(".", 1)[0] in ("backbone", "neck", "head") for k in state) > len(state) / 2
    if whole:
        logger.info("MODEL.WEIGHTS %s -> whole model", path)
        return load_matching_state_dict(model, state, target="model")
    logger.info("MODEL.WEIGHTS %s -> backbone", path)
    return load_matching_state_dict(getattr(model.backbone, "body", model.backbone), state)
