"""One factory for every normalisation layer: ``get_norm(name, channels)``.

Names (case-sensitive, as in configs): ``""`` (none), ``"BN"``, ``"SyncBN"`` (BN that
:func:`torch.nn.SyncBatchNorm.convert_sync_batchnorm` turns into cross-process BN under DDP),
``"FrozenBN"`` (fixed statistics and affine, :mod:`od2.layers.frozen_bn`), ``"GN"`` (32 groups).
More come with later work (EvoNorm-S0, spectral norm, switchable norm) as entries of ``NORMS``.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from od2.layers.frozen_bn import FrozenBatchNorm2d

GN_GROUPS = 32


def _group_norm(channels: int) -> nn.Module:
    groups = GN_GROUPS
    while channels % groups:  # small necks (e.g. 24 channels) still get a valid GN
        groups //= 2
    return nn.GroupNorm(groups, channels)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that the trainer converts to SyncBatchNorm when running distributed."""


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "BN": nn.BatchNorm2d,
    "SyncBN": SyncBatchNorm2d,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm,
}


def get_norm(name: str | Callable[[int], nn.Module], channels: int) -> nn.Module | None:
    """The norm layer called ``name`` for ``channels`` channels, or None for ``""``.

    ``name`` may also be a callable ``channels -> nn.Module``. Layers act on [B, C, H, W].
    """
    if callable(name):
        return name(channels)
    if name in ("", "none", "None"):
        return None
    try:
        return NORMS[name](channels)
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose one of {[''] + sorted(NORMS)}") from None


def norm_uses_bias(name: str | Callable) -> bool:
    """Whether a conv followed by this norm needs its own bias (only when there is no norm)."""
    return not callable(name) and name in ("", "none", "None")


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every ``"SyncBN"`` layer (and only those; plain ``"BN"`` stays per-process) into
    :class:`torch.nn.SyncBatchNorm`, keeping its parameters and statistics. Call once the process group exists."""
    if isinstance(module, SyncBatchNorm2d):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module
