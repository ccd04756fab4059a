"""Spectral normalisation used as the "normalizer" of a conv, as the original's ``SN`` (Miyato et al. 2018).

Not switchable normalisation (that is :mod:`od2.layers.switch_norm`, ``"SwitchNorm"``). Given the conv
kernel W [C_out, C_in, k, k] seen as a matrix [C_out, C_in*k*k], the layer computes

    y = conv(x; W) * gamma / sigma(W) + beta

with sigma(W) from one power iteration per training step and a persistent unit vector u [C_out]:
v = l2norm(W^T u), u' = l2norm(W v), sigma = u'^T W v, where u' and v carry no gradient (the gradient
reaches W through sigma), then u := u'. The last training sigma is kept and used in eval. gamma starts
at 1 and beta at 1 (the original's init). No statistics of x are used. A shared kernel (the RetinaNet
head) can have one layer per level, each with its own gamma, beta and u.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .groups import statistics_dtype


class SpectralNorm2d(nn.Module):
    """Called as ``layer(y, conv_weight)`` on the conv output y [B, C, H, W]; see the module docstring."""

    takes_conv_weight = True

    def __init__(self, channels: int, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))  # gamma
        self.bias = nn.Parameter(torch.ones(channels))  # beta, 1 as the original
        self.register_buffer("u", F.normalize(torch.randn(channels), dim=0, eps=eps))
        self.register_buffer("sigma", torch.ones(()))

    def spectral_norm(self, conv_weight: torch.Tensor) -> torch.Tensor:
        """sigma(W) (scalar); in training one power-iteration step that also updates ``u`` and ``sigma``."""
        if not self.training:
            return self.sigma
        matrix = conv_weight.to(statistics_dtype(conv_weight.dtype)).reshape(conv_weight.shape[0], -1)
        with torch.no_grad():  # matrix: [C_out, C_in*k*k]
            v = F.normalize(self.u.to(matrix.dtype) @ matrix, dim=0, eps=self.eps)  # [C_in*k*k]
            u = F.normalize(matrix @ v, dim=0, eps=self.eps)  # [C_out]
            self.u.copy_(u)
        sigma = u @ (matrix @ v)
        self.sigma.copy_(sigma.detach())
        return sigma

    def forward(self, x: torch.Tensor, conv_weight: torch.Tensor) -> torch.Tensor:
        if conv_weight.shape[0] != x.shape[1]:
            raise ValueError(f"SN: the conv has {conv_weight.shape[0]} output channels but its output has {x.shape[1]}")
        scale = (self.weight / self.spectral_norm(conv_weight)).to(x.dtype)
        return x * scale.view(1, -1, 1, 1) + self.bias.to(x.dtype).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}"
