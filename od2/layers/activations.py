"""Activation factory: ``get_activation(name)`` for the config's ``*.ACTIVATION_FN`` keys."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "hard_swish": lambda: nn.Hardswish(inplace=True),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "NA": nn.Identity,
    "": nn.Identity,
}


def get_activation(name: str) -> nn.Module:
    """The activation module for a config name ("NA" and "" are identity)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
