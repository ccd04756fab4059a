"""Switchable Normalization (Luo et al. 2018, "Differentiable Learning-to-Normalize via Switchable
Normalization"), ``"SwitchNorm"``. No peer ships it; the log's "SN" is spectral norm, not this.

Per channel c of x [B, C, H, W] it mixes instance, layer and batch statistics with learned softmax weights:

    mu_in = mean_HW(x), var_in = var_HW(x)                      (per sample and channel, biased)
    mu_ln = mean_C(mu_in), var_ln = mean_C(var_in) + mean_C((mu_in - mu_ln)^2)
    mu_bn = mean_B(mu_in), var_bn = mean_B(var_in) + mean_B((mu_in - mu_bn)^2)
    mu = sum_k softmax(w_mean)_k mu_k,  var = sum_k softmax(w_var)_k var_k
    y = (x - mu) / sqrt(var + eps) * gamma + beta

In eval the batch statistics come from moving averages (running = momentum * running + (1 - momentum) *
batch, momentum 0.997 as the paper's code). The paper's code takes the unbiased IN variance; this takes the
biased one, so that every variance above is the same 1/N estimator as BN and GN. var_ln and var_bn are the
exact pooled variances written without the E[x^2] - E[x]^2 cancellation of the paper's code (which loses all
precision in fp32 when the features share a large offset).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .groups import statistics_dtype


class SwitchNorm2d(nn.Module):
    """Switchable norm over [B, C, H, W]; gamma 1, beta 0, mixing logits 1 (equal weights) at init."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.997):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.mean_weight = nn.Parameter(torch.ones(3))
        self.var_weight = nn.Parameter(torch.ones(3))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(statistics_dtype(x.dtype))
        var_in, mean_in = torch.var_mean(xf, dim=(2, 3), unbiased=False)  # [B, C]
        mean_ln = mean_in.mean(1, keepdim=True)  # [B, 1]
        var_ln = var_in.mean(1, keepdim=True) + (mean_in - mean_ln).square().mean(1, keepdim=True)
        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)  # [1, C]
            var_bn = var_in.mean(0, keepdim=True) + (mean_in - mean_bn).square().mean(0, keepdim=True)
            with torch.no_grad():
                self.running_mean.lerp_(mean_bn[0].to(self.running_mean.dtype), 1 - self.momentum)
                self.running_var.lerp_(var_bn[0].to(self.running_var.dtype), 1 - self.momentum)
        else:
            mean_bn, var_bn = self.running_mean[None].to(xf.dtype), self.running_var[None].to(xf.dtype)
        mean_mix, var_mix = self.mean_weight.softmax(0), self.var_weight.softmax(0)
        mean = mean_mix[0] * mean_in + mean_mix[1] * mean_ln + mean_mix[2] * mean_bn  # [B, C]
        var = var_mix[0] * var_in + var_mix[1] * var_ln + var_mix[2] * var_bn
        scale = self.weight * (var + self.eps).rsqrt()  # [B, C]
        shift = self.bias - mean * scale
        return (xf * scale[..., None, None] + shift[..., None, None]).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}, momentum={self.momentum}"
