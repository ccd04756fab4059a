"""Convolution and a following affine norm as one convolution ("folded BatchNorm").

A FrozenBatchNorm2d, or a BatchNorm in eval mode, is a per-channel affine map y = x * scale + shift. After a
convolution it folds into the convolution's weights: conv(x, W * scale) + (b * scale + shift). The folded weights
are recomputed at every call from the current parameters and buffers (a weight-sized multiply), so training,
checkpoints and state_dict keys are unchanged while each norm's pass over the activations (and its backward
pass) disappears. A norm that is not affine at the moment (training-mode BatchNorm, GroupNorm, EvoNorm, ...)
runs unfolded.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .frozen_bn import FrozenBatchNorm2d


def affine_of(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale [C], shift [C]) when ``norm`` acts as ``x * scale + shift`` right now, else None."""
    if isinstance(norm, FrozenBatchNorm2d):
        return norm.scale_shift()
    if isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm)) and not norm.training and norm.track_running_stats:
        scale = (norm.running_var + norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        return scale, shift if norm.bias is None else shift + norm.bias
    return None


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))`` for a zero-padded ``conv``, as a single convolution when ``norm`` is affine (see the module
    docstring).

    x: [B, C_in, H, W] -> [B, C_out, H', W'].
    """
    affine = affine_of(norm)
    if affine is None:
        return norm(F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups))
    scale, shift = affine
    weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return F.conv2d(x, weight, bias.to(weight.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)
