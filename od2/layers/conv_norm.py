"""conv -> norm -> activation blocks that work with every ``get_norm`` name.

Two norm kinds need care: spectral norm (``SN``) reads the preceding conv's kernel, and EvoNorm-S0
includes its own activation, so no ACTIVATION_FN is applied after it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .activations import get_activation
from .norms import get_norm, norm_includes_activation, norm_uses_bias
from .same_padding import Conv2dSame


class NormAct(nn.Module):
    """norm then activation after a conv, [B, C, H, W] -> [B, C, H, W]; call as ``block(y, conv.weight)``."""

    def __init__(self, norm: str | Callable[[int], nn.Module], channels: int, activation: str):
        super().__init__()
        self.norm = get_norm(norm, channels) or nn.Identity()
        self.act = nn.Identity() if norm_includes_activation(norm) else get_activation(activation)
        self.takes_conv_weight = getattr(self.norm, "takes_conv_weight", False)

    def forward(self, x: torch.Tensor, conv_weight: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x, conv_weight) if self.takes_conv_weight else self.norm(x)
        return self.act(x)


class SeparableConv2d(nn.Module):
    """Depthwise ``kernel x kernel`` conv (no bias) then a pointwise 1x1 conv, the EfficientDet/MobileNet
    separable conv: ``[B, Cin, H, W] -> [B, Cout, ceil(H/stride), ceil(W/stride)]`` ("same" padding).

    ``weight`` and ``bias`` are the pointwise conv's: what a spectral norm after this conv normalises, and
    the output bias (a RetinaNet class prior goes there).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel, stride, padding=kernel // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=bias)

    @property
    def weight(self) -> torch.Tensor:
        return self.pointwise.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.pointwise.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def make_conv(cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = True, groups: int = 1,
              separable: bool = False, tf_same: bool = False) -> nn.Module:
    """A "same"-padded conv: an ``nn.Conv2d`` or, with ``separable``, a :class:`SeparableConv2d` (``groups`` must
    be 1). ``tf_same`` pads a strided conv as TensorFlow does (:class:`od2.layers.same_padding.Conv2dSame`, no
    bias), for weights trained in TF."""
    if separable:
        if groups != 1 or tf_same:
            raise ValueError("a separable conv is already depthwise + pointwise with symmetric padding; "
                             "groups must be 1 and tf_same False")
        return SeparableConv2d(cin, cout, kernel, stride, bias=bias)
    if tf_same and stride > 1:
        if bias:
            raise ValueError("a TF 'SAME' conv has no bias: put a norm after it")
        return Conv2dSame(cin, cout, kernel, stride, groups=groups)
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)


class ConvNormAct(nn.Module):
    """conv ("same" padding; bias only without a norm) -> norm -> activation, [B, Cin, H, W] -> [B, Cout, H', W'].

    ``norm`` is a :func:`get_norm` name or a ``channels -> nn.Module`` factory. ``groups=cin`` gives a depthwise
    conv; ``separable=True`` a depthwise + pointwise pair (:class:`SeparableConv2d`); ``tf_same=True`` TF 'SAME'
    padding on a strided conv (see :func:`make_conv`).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 norm: str | Callable[[int], nn.Module] = "", activation: str = "relu", groups: int = 1,
                 separable: bool = False, tf_same: bool = False):
        super().__init__()
        self.conv = make_conv(cin, cout, kernel, stride, norm_uses_bias(norm), groups, separable, tf_same)
        self.norm_act = NormAct(norm, cout, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_act(self.conv(x), self.conv.weight)
