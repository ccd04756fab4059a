"""One factory for every normalisation layer: ``get_norm(name, channels)``.

Names (as in configs; see docs/config.md):

- ``""`` none; ``"BN"``; ``"SyncBN"`` (BN that :func:`convert_sync_batchnorm` turns into cross-process BN under
  DDP); ``"FrozenBN"`` (fixed statistics and affine, :mod:`od2.layers.frozen_bn`); ``"GN"`` (32 groups; alias
  ``"GNV0"``, the original's name for the same maths);
- ``"EvoNormS0"`` (alias ``"evo_norm_s0"``): a norm that includes its activation (``includes_activation``);
- ``"SN"`` (alias ``"SpectralNorm"``): spectral normalisation of the preceding conv, called as
  ``layer(y, conv.weight)`` (``takes_conv_weight``);
- ``"SwitchNorm"``: switchable normalisation (Luo et al. 2018), which the log's "SN" is *not*.

Modules that place a norm after a conv go through :class:`od2.layers.conv_norm.NormAct`, which knows the
two special kinds.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn as nn

from .evonorm import EvoNormS0
from .frozen_bn import FrozenBatchNorm2d
from .groups import num_groups
from .spectral_norm import SpectralNorm2d
from .switch_norm import SwitchNorm2d

logger = logging.getLogger(__name__)

GN_GROUPS = 32


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(num_groups(channels, GN_GROUPS), channels)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that the trainer converts to SyncBatchNorm when running distributed on a GPU."""


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "BN": nn.BatchNorm2d,
    "SyncBN": SyncBatchNorm2d,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm,
    "GNV0": _group_norm,
    "EvoNormS0": EvoNormS0,
    "evo_norm_s0": EvoNormS0,
    "SN": SpectralNorm2d,
    "SpectralNorm": SpectralNorm2d,
    "SwitchNorm": SwitchNorm2d,
}
NO_NORM = ("", "none", "None")
NORM_MODULE_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                                       FrozenBatchNorm2d, EvoNormS0, SpectralNorm2d, SwitchNorm2d)


def get_norm(name: str | Callable[[int], nn.Module], channels: int) -> nn.Module | None:
    """The norm layer called ``name`` for ``channels`` channels, or None for ``""``.

    ``name`` may also be a callable ``channels -> nn.Module``. Layers act on [B, C, H, W].
    """
    if callable(name):
        return name(channels)
    if name in NO_NORM:
        return None
    try:
        return NORMS[name](channels)
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose one of {[''] + sorted(NORMS)}") from None


def norm_includes_activation(name: str | Callable) -> bool:
    """Whether the norm ``name`` is a norm-activation layer (EvoNorm-S0): no separate activation follows it."""
    return not callable(name) and name not in NO_NORM and getattr(NORMS.get(name), "includes_activation", False)


def is_norm_module(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer (its parameters get SOLVER.WEIGHT_DECAY_NORM)."""
    return isinstance(module, NORM_MODULE_TYPES)


def norm_uses_bias(name: str | Callable) -> bool:
    """Whether a conv followed by this norm needs its own bias (only when there is no norm)."""
    return not callable(name) and name in NO_NORM


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Turn every ``"SyncBN"`` layer (and only those; plain ``"BN"`` stays per-process) into
    :class:`torch.nn.SyncBatchNorm`, keeping its parameters and statistics. Call once the process group exists.

    ``device`` is where the model runs. Only CUDA devices convert: torch's SyncBatchNorm has no CPU kernel (a CPU
    run under a process group fails at its first training step), so elsewhere the layers stay per-process
    BatchNorm and one warning says so.
    """
    if not any(isinstance(m, SyncBatchNorm2d) for m in module.modules()):
        return module
    if device.type != "cuda":
        logger.warning("SyncBN runs as per-process BatchNorm on %s: torch's SyncBatchNorm needs CUDA, so each "
                       "process normalises with its own batch statistics", device.type.upper())
        return module
    return _convert_sync_batchnorm(module)


def _convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    if isinstance(module, SyncBatchNorm2d):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        module.add_module(name, _convert_sync_batchnorm(child))
    return module
