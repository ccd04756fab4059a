"""EvoNorm-S0 (Liu et al. 2020, "Evolving Normalization-Activation Layers"), as the original's ``evo_norm_s0``.

    y = x * sigmoid(v * x) / sqrt(var_g(x) + eps) * gamma + beta

var_g is the biased variance of x over (H, W, channels of the group), per sample: no batch statistics,
so it behaves the same at batch size 1 and in eval. No mean subtraction. It is a norm *and* an activation
(the builders apply no separate ACTIVATION_FN after it).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .groups import num_groups, statistics_dtype


class EvoNormS0(nn.Module):
    """EvoNorm-S0 over [B, C, H, W] with ``groups`` groups (32, halved until it divides C), eps 1e-5.

    gamma = 1, beta = 0 and v = 1 at init, one of each per channel. Statistics are computed in fp32.
    """

    includes_activation = True

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.groups = num_groups(channels, groups)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))  # gamma
        self.bias = nn.Parameter(torch.zeros(channels))  # beta
        self.v = nn.Parameter(torch.ones(channels))

    def group_std(self, x: torch.Tensor) -> torch.Tensor:
        """sqrt(var_g(x) + eps) per sample and channel, [B, C].

        From per-channel statistics (one reduction over H, W in x's own memory layout, no copy):
        var_g = mean_group(var_c) + mean_group((mean_c - mean_g)^2), exact and free of E[x^2] - E[x]^2 cancellation.
        """
        batch, channels = x.shape[:2]
        var_c, mean_c = torch.var_mean(x.to(statistics_dtype(x.dtype)), dim=(2, 3), unbiased=False)  # [B, C]
        mean_c = mean_c.view(batch, self.groups, -1)
        spread = (mean_c - mean_c.mean(2, keepdim=True)).square()
        var_g = (var_c.view(batch, self.groups, -1) + spread).mean(2)  # [B, G]
        return (var_g + self.eps).sqrt().repeat_interleave(channels // self.groups, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.weight / self.group_std(x)).to(x.dtype)[..., None, None]  # [B, C, 1, 1]
        v, beta = self.v.to(x.dtype).view(1, -1, 1, 1), self.bias.to(x.dtype).view(1, -1, 1, 1)
        return torch.addcmul(beta, x * torch.sigmoid(v * x), scale)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, groups={self.groups}, eps={self.eps}"
