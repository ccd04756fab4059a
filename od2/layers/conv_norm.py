"""conv -> norm -> activation blocks that work with every ``get_norm`` name.

Two norm kinds need care: spectral norm (``SN``) reads the preceding conv's kernel, and EvoNorm-S0
includes its own activation, so no ACTIVATION_FN is applied after it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .activations import get_activation
from .norms import get_norm, norm_includes_activation, norm_uses_bias


class NormAct(nn.Module):
    """norm then activation after a conv, [B, C, H, W] -> [B, C, H, W]; call as ``block(y, conv.weight)``."""

    def __init__(self, norm: str, channels: int, activation: str):
        super().__init__()
        self.norm = get_norm(norm, channels) or nn.Identity()
        self.act = nn.Identity() if norm_includes_activation(norm) else get_activation(activation)
        self.takes_conv_weight = getattr(self.norm, "takes_conv_weight", False)

    def forward(self, x: torch.Tensor, conv_weight: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x, conv_weight) if self.takes_conv_weight else self.norm(x)
        return self.act(x)


class ConvNormAct(nn.Module):
    """conv ("same" padding; bias only without a norm) -> norm -> activation, [B, Cin, H, W] -> [B, Cout, H', W']."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: str = "", activation: str = "relu",
                 groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups,
                              bias=norm_uses_bias(norm))
        self.norm_act = NormAct(norm, cout, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_act(self.conv(x), self.conv.weight)
