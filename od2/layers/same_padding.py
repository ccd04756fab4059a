"""TensorFlow's 'SAME' padding, which weights trained in TF (EfficientNet, EfficientDet) expect on strided layers."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def tf_same_padding(height: int, width: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts ``(left, right, top, bottom)`` that give a ``kernel``/``stride`` window an output of
    ``ceil(size / stride)`` per axis, as TF's 'SAME' does.

    Per axis the total is ``max((ceil(size / stride) - 1) * stride + kernel - size, 0)``, the smaller half before
    and the larger after (PyTorch's symmetric ``padding=k // 2`` differs for strided windows on even sizes).
    """
    if kernel < 1 or stride < 1:
        raise ValueError(f"kernel and stride must be at least 1, got kernel {kernel}, stride {stride}")
    if torch.jit.is_tracing():  # the sizes are traced tensors: keep the padding a function of them (dynamic ONNX)
        return _traced_same_padding(height, width, kernel, stride)
    if height < 1 or width < 1:
        raise ValueError(f"the input size must be at least 1x1, got {height}x{width}")
    pads = []
    for size in (width, height):  # F.pad order: last axis first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return pads[0], pads[1], pads[2], pads[3]


def _traced_same_padding(height, width, kernel: int, stride: int) -> tuple:
    """:func:`tf_same_padding` in tensor operations, for sizes the tracer records as 0-dim tensors."""
    pads = []
    for size in (width, height):
        size = torch.as_tensor(size)
        total = (torch.div(size + stride - 1, stride, rounding_mode="floor") - 1) * stride + kernel - size
        total = total.clamp(min=0)
        before = torch.div(total, 2, rounding_mode="floor")
        pads += [before, total - before]
    return pads[0], pads[1], pads[2], pads[3]


class Conv2dSame(nn.Conv2d):
    """A square-kernel ``nn.Conv2d`` (no bias) with TF 'SAME' zero padding computed from the input size:
    ``float [B, C_in, H, W] -> float [B, C_out, ceil(H/s), ceil(W/s)]``. For stride 1 and an odd kernel this is
    the symmetric ``k // 2`` padding, so it is meant for strided convs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = tf_same_padding(x.shape[-2], x.shape[-1], self.kernel_size[0], self.stride[0])
        return super().forward(F.pad(x, pads))
