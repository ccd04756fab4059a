"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016), for CPU inference, as a
conversion of a built model: :func:`convert_to_winograd`.

A 3x3 stride-1 convolution computes each 4x4 output tile from a 6x6 input tile with 36 multiplications per
(input, output) channel pair instead of 144: the tile and the kernel are transformed (``BT d B`` and ``G g G^T``),
multiplied element by element, which over channels is 36 independent matrix products, and transformed back
(``AT m A``). PyTorch's CPU convolutions (oneDNN) always run the direct algorithm; for the RetinaNet head's
256-channel convs this runs them 1.4-2x faster on the 2-core CPU here. The outputs differ from the direct
convolution's by about 1e-5 relative (fp32 rounding of the transforms), as cuDNN's Winograd kernels do on GPUs.

:func:`convert_to_winograd` turns a model's eligible ``nn.Conv2d`` into :class:`WinogradConv2d`, which has the same
parameters and state_dict and runs Winograd only where such differences are harmless (inference: detections agree
to 1e-3 px) and where it pays: CPU, fp32, no autograd, no tracing, scripting, compiling or export, regular (not
grouped) 3x3 stride-1 padding-1 convolutions with at least ``MIN_CHANNELS`` input channels on maps of at least
``MIN_PIXELS`` pixels; everything else is ``F.conv2d``, bit for bit. Training keeps the direct convolution: behind
a GroupNorm the gradient of a tower's first conv is a small difference of large terms, and the transforms'
rounding becomes a few percent of it (a 1.3x faster step is not worth an untested change to what training
computes).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_CHANNELS = 128  # at 64 channels the 36 small matrix products are slower than oneDNN's direct conv
MIN_PIXELS = 256  # below about 16x16 (P6, P7 of a 576x768 image) the direct convolution is faster
BAND_VALUES = 32768  # input values (tiles x channels) transformed at a time, so that a band stays in cache

_BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
_AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                   dtype=torch.float64)
# Both 2-D transforms as one matrix over the flattened tile: (BT d B)[i, j] = sum_kl BT[i, k] BT[j, l] d[k, l].
_INPUT_TRANSFORM = torch.kron(_BT, _BT).float()  # [36, 36]
_OUTPUT_TRANSFORM = torch.kron(_AT, _AT).float()  # [16, 36]


def transform_filter(weight: torch.Tensor) -> torch.Tensor:
    """Conv weight [K, C, 3, 3] -> transformed filter [36, C, K] (``G g G^T`` per channel pair), computed in
    float64 (it is cached, so precision costs nothing) and returned in the weight's dtype."""
    transformed = torch.einsum("ik,jl,ockl->ijco", _G, _G, weight.double())
    return transformed.reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def winograd_conv3x3(x: torch.Tensor, transformed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for x [B, C, H, W] fp32 and ``transform_filter(weight)`` [36, C, K];
    returns [B, K, H, W] in channels_last memory layout."""
    batch, channels, height, width = x.shape
    out_channels = transformed.shape[2]
    tile_rows, tile_cols = -(-height // 4), -(-width // 4)
    # NHWC, one zero row/column before (padding=1) and enough after to fill the last tile and its border
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 4 * tile_cols + 1 - width, 1, 4 * tile_rows + 1 - height))
    out = torch.empty(batch, 4 * tile_rows, 4 * tile_cols, out_channels, dtype=x.dtype, device=x.device)
    band = max(1, BAND_VALUES // (tile_cols * channels))
    for image in range(batch):
        for row in range(0, tile_rows, band):
            rows = min(band, tile_rows - row)
            tiles = padded[image, 4 * row: 4 * (row + rows) + 2].unfold(0, 6, 4).unfold(1, 6, 4)  # [r, c, C, 6, 6]
            count = rows * tile_cols
            tiles = tiles.permute(3, 4, 0, 1, 2).reshape(36, count * channels)
            products = torch.bmm((_INPUT_TRANSFORM @ tiles).view(36, count, channels), transformed)  # [36, n, K]
            result = (_OUTPUT_TRANSFORM @ products.view(36, count * out_channels)).view(4, 4, rows, tile_cols, -1)
            out[image, 4 * row: 4 * (row + rows)] = result.permute(2, 0, 3, 1, 4).reshape(4 * rows, 4 * tile_cols, -1)
    if bias is not None:
        out += bias
    return out[:, :height, :width].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def winograd_eligible(conv: nn.Module) -> bool:
    """Whether ``conv`` is a convolution that Winograd F(4x4, 3x3) computes and that is wide enough for it to pay:
    an ``nn.Conv2d``, 3x3, stride 1, zero padding 1, no dilation, not grouped, ``MIN_CHANNELS``+ input channels."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
        and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
        and conv.in_channels >= MIN_CHANNELS
    )


def winograd_applies(conv: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``conv(x)`` may run as :func:`winograd_conv3x3` (see the module docstring for the conditions)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    return (
        winograd_eligible(conv)
        and x.dim() == 4 and x.shape[-2] * x.shape[-1] >= MIN_PIXELS
        and x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
    )


class WinogradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, state_dict and results up to fp32 rounding) that runs by Winograd F(4x4, 3x3)
    where :func:`winograd_applies` and as ``nn.Conv2d`` everywhere else. Made by :func:`convert_to_winograd`.

    The transformed filter is kept on the module (not in its state_dict, nor in copies or pickles) and recomputed
    when the weight changes: another tensor, new data, or an in-place update such as an optimizer step or
    load_state_dict. A weight made under ``torch.inference_mode`` has no version counter; its filter is recomputed at
    every call.
    """

    _winograd_cache: tuple | None = None  # (weight, its data_ptr, its version, filter [36, C, K])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, C_out, H, W] (channels_last memory layout when computed by Winograd)."""
        if not winograd_applies(self, x):
            return super().forward(x)
        return winograd_conv3x3(x, self._transformed_filter(), self.bias)

    def _transformed_filter(self) -> torch.Tensor:
        weight = self.weight
        if weight.is_inference():  # no version counter, so an in-place update could not be seen: no cache
            return transform_filter(weight.detach())
        cached = self._winograd_cache
        if cached is None or cached[0] is not weight or cached[1:3] != (weight.data_ptr(), weight._version):
            cached = (weight, weight.data_ptr(), weight._version, transform_filter(weight.detach()))
            self._winograd_cache = cached
        return cached[3]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_winograd_cache", None)  # a copy recomputes it: the filter is as large as the weight
        return state


def convert_to_winograd(model: nn.Module) -> nn.Module:
    """Turn every :func:`winograd_eligible` ``nn.Conv2d`` of ``model`` (the model itself included) into a
    :class:`WinogradConv2d`, in place, and return ``model``.

    The modules keep their identity, parameters, buffers and hooks (their class changes, as
    ``torch.nn.utils.parametrize`` does it), so the state_dict, optimizers and shared modules are unaffected.
    Subclasses of ``nn.Conv2d`` are left alone (they may compute something else in their forward), which also
    makes a second conversion a no-op.
    """
    for module in model.modules():
        if type(module) is nn.Conv2d and winograd_eligible(module):
            module.__class__ = WinogradConv2d
    return model
