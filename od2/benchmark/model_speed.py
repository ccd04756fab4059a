"""Inference and training speed of od2's RetinaNet against torchvision's, measured in turns (see timing.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from od2.layers.winograd import convert_to_winograd

from .retinanet_pair import random_batch, retinanet_pair
from .timing import Rounds, interleaved_rounds

TRAIN_BATCH = 2


def sgd_step(model: nn.Module, losses: Callable[[], dict[str, torch.Tensor]]) -> Callable[[], None]:
    """One SGD step (forward, backward, momentum update) of the trainable parameters, as a function."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step() -> None:
        total = sum(losses().values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


def inference_seconds_per_image(batch: int, iters: int, bn: str = "BN", height: int = 576,
                                width: int = 768) -> dict[str, Rounds]:
    """``{"od2": rounds, "torchvision": rounds}``: seconds per image of one batched forward with postprocessing.

    od2 takes the uint8 batch and runs converted for CPU inference (``convert_to_winograd``, what TEST.WINOGRAD
    does in od2 eval and predict); torchvision takes its list of float images in [0, 1] (converted beforehand) and
    runs its own transform (normalise, resize to short side 576 (here a no-op resize), batch) and postprocess.
    """
    ours, theirs = (m.eval() for m in retinanet_pair(bn, min(height, width)))
    convert_to_winograd(ours)
    images, _, _ = random_batch(batch, height=height, width=width)
    sizes = torch.tensor([[height, width]] * batch)
    floats = [image.float() / 255 for image in images]
    with torch.inference_mode():
        rounds = interleaved_rounds({"od2": lambda: ours(images, sizes), "torchvision": lambda: theirs(floats)},
                                    iters)
    return {name: r.per(batch) for name, r in rounds.items()}


def train_seconds_per_iteration(iters: int, bn: str, height: int = 576, width: int = 768) -> dict[str, Rounds]:
    """``{"od2": rounds, "torchvision": rounds}``: seconds of one training step on ``TRAIN_BATCH`` images with 8
    boxes each."""
    ours, theirs = (m.train() for m in retinanet_pair(bn, min(height, width)))
    images, boxes, labels = random_batch(TRAIN_BATCH, height=height, width=width)
    sizes = torch.tensor([[height, width]] * TRAIN_BATCH)
    floats = [image.float() / 255 for image in images]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    steps = {
        "od2": sgd_step(ours, lambda: ours(images, sizes, {"boxes": boxes, "labels": labels})),
        "torchvision": sgd_step(theirs, lambda: theirs(floats, targets)),
    }
    return interleaved_rounds(steps, iters)
