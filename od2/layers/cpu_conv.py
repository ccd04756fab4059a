"""Convolutions whose CPU weight gradient runs in whichever memory layout is faster for their shape.

od2 keeps activations channels_last (NHWC): oneDNN's NHWC forward and input-gradient kernels are as fast as or
faster than its NCHW ones, and 1x1 convolutions are 2-4x faster. Its NHWC *weight-gradient* kernels are not, for
some shapes: on the 2-core AMD EPYC here, at batch 2, a ResNet-50's 3x3 stride-2 convs take 80 ms against 29
(res3), 89 against 42 (res4), and the RetinaNet head's 256-channel 3x3 conv at P3 (72x96) 134 against 102, while
the same conv at batch 1 is equally fast both ways and a 64-channel 3x3 conv is faster in NHWC. No fixed rule
fits, so, like ``torch.backends.cudnn.benchmark``, each convolution shape's weight gradient is timed both ways and
the faster is kept: its first ``2 * TRIALS_PER_LAYOUT`` backward passes alternate between the layouts, each timed
where it runs in training (the NCHW way including the copies of the input and of the output gradient into that
layout, a memory pass each), so the choice costs no extra computation. The forward pass and the input
gradient stay NHWC. Both ways compute the same sums, in a different order (differences of fp32 rounding).

Applies to CPU fp32 training (autograd on, no autocast, not tracing, scripting or compiling) of regular
(``groups == 1``) convolutions with kernels larger than 1x1 on channels_last inputs, of at least
``MIN_TUNED_MACS`` multiply-adds; everything else calls ``F.conv2d`` unchanged.
``torch.use_deterministic_algorithms(True)``, or :func:`set_weight_grad_tuning` (False), keeps every weight
gradient NHWC, so that runs repeat bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

TRIALS_PER_LAYOUT = 2  # in-place timings per layout before choosing; the best of each counts
# Below about 1e9 multiply-adds (a 256-channel 3x3 conv on two 24x32 maps is 0.9e9) the weight gradient takes a
# few ms either way and the layouts differ by less than the timing noise.
MIN_TUNED_MACS = 1e9
LAYOUTS = (torch.channels_last, torch.contiguous_format)

_enabled = True
# A convolution shape: (input shape, weight shape, stride, padding, dilation, with bias gradient, threads).
_tuned_layouts: dict[tuple, torch.memory_format] = {}  # shape -> the faster layout, once chosen
_trials: dict[tuple, dict[torch.memory_format, list[float]]] = {}  # shape -> seconds per layout, while trying
_clock = time.perf_counter


def set_weight_grad_tuning(enabled: bool) -> bool:
    """Switch the per-shape choice of the weight gradient's layout on or off; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def tuned_layouts() -> dict[tuple, torch.memory_format]:
    """The layouts chosen so far, by convolution shape (a copy; for logs and tests)."""
    return dict(_tuned_layouts)


def clear_tuned_layouts() -> None:
    """Forget every choice and trial: each shape is tried in both layouts again."""
    _tuned_layouts.clear()
    _trials.clear()


def _multiply_adds(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int]) -> float:
    """About the multiply-adds of the convolution (and of its weight gradient): output positions x weight size."""
    return x.shape[0] * (x.shape[2] / stride[0]) * (x.shape[3] / stride[1]) * weight.numel()


def _tunable(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], groups: int) -> bool:
    """Whether the weight gradient of this convolution may run in a tuned layout (see the module docstring)."""
    return (
        _enabled
        and groups == 1
        and weight.requires_grad
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.shape[2] * weight.shape[3] > 1
        and _multiply_adds(x, weight, stride) >= MIN_TUNED_MACS
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.is_autocast_enabled("cpu")
        and not torch.are_deterministic_algorithms_enabled()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
    )


def _weight_grad_in_tuned_layout(key: tuple, run: Callable[[torch.memory_format], tuple]) -> tuple:
    """``run(layout)`` in the layout chosen for ``key``. Until one is chosen, the layouts take turns and each call
    is timed where it runs (cold caches and all, as in training); after ``TRIALS_PER_LAYOUT`` calls in each, the
    one with the fastest call is kept."""
    layout = _tuned_layouts.get(key)
    if layout is not None:
        return run(layout)
    trials = _trials.setdefault(key, {candidate: [] for candidate in LAYOUTS})
    layout = min(LAYOUTS, key=lambda candidate: len(trials[candidate]))
    start = _clock()
    result = run(layout)
    trials[layout].append(_clock() - start)
    if all(len(seconds) >= TRIALS_PER_LAYOUT for seconds in trials.values()):
        _tuned_layouts[key] = min(LAYOUTS, key=lambda candidate: min(trials[candidate]))
        del _trials[key]
    return result


class _TunedWeightGradConv2d(torch.autograd.Function):
    """``F.conv2d`` whose backward computes the weight (and bias) gradient in the tuned layout."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conv_args = (stride, padding, dilation)
        ctx.bias_sizes = None if bias is None else [bias.shape[0]]
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conv_args
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]

        def backward_pass(layout, grad, inp, mask):
            return torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=layout), inp.contiguous(memory_format=layout),
                weight.contiguous(memory_format=layout), ctx.bias_sizes, stride, padding, dilation,
                False, [0, 0], 1, mask)

        grad_input = grad_weight = grad_bias = None
        if need_input:
            grad_input = backward_pass(torch.channels_last, grad_out, x, (True, False, False))[0]
        if need_weight or need_bias:
            mask = (False, need_weight, need_bias)
            key = (tuple(x.shape), tuple(weight.shape), stride, padding, dilation, need_bias,
                   torch.get_num_threads())
            _, grad_weight, grad_bias = _weight_grad_in_tuned_layout(
                key, lambda layout: backward_pass(layout, grad_out, x, mask))
            if grad_weight is not None:
                grad_weight = grad_weight.contiguous(memory_format=torch.channels_last
                                                     if weight.is_contiguous(memory_format=torch.channels_last)
                                                     else torch.contiguous_format)
        return grad_input, grad_weight, grad_bias, None, None, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
           groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` (zero padding given as numbers), with the weight gradient in the tuned layout where that
    applies (see the module docstring). x: [B, C_in, H, W], weight: [C_out, C_in / groups, kh, kw] ->
    [B, C_out, H', W']."""
    if isinstance(padding, str) or not _tunable(x, weight, _pair(stride), groups):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return _TunedWeightGradConv2d.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation))


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state_dict and behaviour) whose CPU training runs through :func:`conv2d`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
