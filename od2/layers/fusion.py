"""Fusion of same-shaped feature maps: plain sum, or EfficientDet's fast normalised weighted sum.

``wsum`` (Tan et al. 2020, "fast normalized fusion"; the original's ``od_toolkit.fusion``, original-spec §9.2):
``out = sum_i relu(w_i) * x_i / (sum_i relu(w_i) + eps)`` with one learned scalar ``w_i`` per input, initialised to 1,
and eps 1e-4. Shared by the FPN (``MODEL.FPN.FUSE_TYPE``) and the two-way and bidirectional necks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["FUSE_TYPES", "Fusion"]

FUSE_TYPES = ("sum", "wsum")


class Fusion(nn.Module):
    """Fuse ``num_inputs`` tensors of one shape [B, C, H, W] into one of that shape.

    Args:
        num_inputs: how many maps are fused (>= 1).
        fuse_type: ``sum`` (no parameters) or ``wsum`` (one weight per input, see the module docstring).
        eps: the ``wsum`` denominator's epsilon.
    """

    def __init__(self, num_inputs: int, fuse_type: str = "sum", eps: float = 1e-4) -> None:
        super().__init__()
        if fuse_type not in FUSE_TYPES:
            raise ValueError(f"unknown fuse type {fuse_type!r}; choose one of {FUSE_TYPES}")
        if num_inputs < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        self.num_inputs, self.fuse_type, self.eps = num_inputs, fuse_type, eps
        self.weight = nn.Parameter(torch.ones(num_inputs)) if fuse_type == "wsum" else None

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != self.num_inputs:
            raise ValueError(f"Fusion built for {self.num_inputs} inputs got {len(inputs)}")
        if self.weight is None:
            out = inputs[0]
            for x in inputs[1:]:
                out = out + x
            return out
        weights = torch.relu(self.weight)
        weights = (weights / (weights.sum() + self.eps)).to(inputs[0].dtype)
        out = inputs[0] * weights[0]
        for x, w in zip(inputs[1:], weights[1:]):
            out = out + x * w
        return out

    def extra_repr(self) -> str:
        return f"num_inputs={self.num_inputs}, fuse_type={self.fuse_type!r}"
