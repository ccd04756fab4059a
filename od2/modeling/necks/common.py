"""Pieces every neck shares: level names, TF 'SAME' resampling between pyramid levels, conv initialisation."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from od2.layers.same_padding import tf_same_padding

__all__ = ["downsample_same", "init_neck_convs", "pyramid_levels", "same_max_pool2d", "upsample_nearest"]


def pyramid_levels(names: list[str]) -> list[int]:
    """The levels k of input names ``"C<k>"`` (finest first, consecutive), e.g. ``["C3", "C4"] -> [3, 4]``.

    The necks pair each level with its neighbours by a factor-2 resize, so a gap in the levels would be silently wrong.
    """
    if not names:
        raise ValueError("a neck needs at least one input level")
    try:
        if not all(name.startswith("C") for name in names):
            raise ValueError
        levels = [int(name[1:]) for name in names]
    except ValueError:
        raise ValueError(f"input feature names must look like 'C3', 'C4', ...; got {names}") from None
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"input levels must be consecutive and finest first; got {names}")
    return levels


def downsample_same(x: torch.Tensor, size: torch.Size | tuple[int, int] | None = None) -> torch.Tensor:
    """2x2/2 average pooling with TF 'SAME' padding: [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)].

    ``ceil_mode`` keeps the last row/column of an odd map; with no padding PyTorch divides such an edge window by
    its valid element count only, which is what TF's 'SAME' avg-pool does. ``size`` (the map this result is fused
    with) is checked so that inputs not following the ceil rule fail loudly instead of broadcasting or misaligning.
    """
    y = F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
    if size is not None and tuple(y.shape[-2:]) != tuple(size):
        raise ValueError(f"a {tuple(x.shape[-2:])} map pools to {tuple(y.shape[-2:])}, not the next level's "
                         f"{tuple(size)}: input levels must satisfy H_(k+1) = ceil(H_k / 2)")
    return y


def upsample_nearest(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Nearest resize [B, C, h, w] -> [B, C, *size]: exact 2x nearest upsampling when ``size`` is (2h, 2w)."""
    return F.interpolate(x, size=tuple(size), mode="nearest")


def same_max_pool2d(x: torch.Tensor, kernel: int, stride: int = 2) -> torch.Tensor:
    """TF 'SAME' max pool [B, C, h, w] -> [B, C, ceil(h/stride), ceil(w/stride)].

    The padding is :func:`od2.layers.same_padding.tf_same_padding`'s, with -inf cells, so each window's max is over
    its valid elements only. (PyTorch's symmetric ``padding=1`` for a 3x3/2 pool would shift the windows by one row
    on even sizes.)
    """
    pads = tf_same_padding(x.shape[-2], x.shape[-1], kernel, stride)
    if any(pads):
        x = F.pad(x, pads, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


def init_neck_convs(module: nn.Module) -> None:
    """detectron2's c2_xavier_fill (kaiming-uniform with a=1) on every conv of ``module``, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=1)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
