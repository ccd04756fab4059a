"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016), for CPU inference.

A 3x3 stride-1 convolution computes each 4x4 output tile from a 6x6 input tile with 36 multiplications per
(input, output) channel pair instead of 144: the tile and the kernel are transformed (``BT d B`` and ``G g G^T``),
multiplied element by element, which over channels is 36 independent matrix products, and transformed back
(``AT m A``). PyTorch's CPU convolutions (oneDNN) always run the direct algorithm; for the RetinaNet head's
256-channel convs this runs them 1.4-2x faster on the 2-core CPU here. The outputs differ from the direct
convolution's by about 1e-5 relative (fp32 rounding of the transforms), as cuDNN's Winograd kernels do on GPUs.

Used only at inference, where such differences are harmless (detections agree to 1e-3 px), and only where it
pays: CPU, fp32, no autograd, no tracing, scripting, compiling or export, regular (not grouped) 3x3 stride-1
padding-1 convolutions with at least ``MIN_CHANNELS`` input channels on maps of at least ``MIN_PIXELS`` pixels.
Training keeps the direct convolution: behind a GroupNorm the gradient of a tower's first conv is a small
difference of large terms, and the transforms' rounding becomes a few percent of it (a 1.3x faster step is not
worth an untested change to what training computes).
"""

from __future__ import annotations

import weakref

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

# conv -> (weak reference to the weight it was made from, (data_ptr, version) of that weight, filter [36, C, K])
_FILTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def winograd_applies(conv: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``conv(x)`` may run as :func:`winograd_conv3x3` (see the module docstring for the conditions)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
        and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
        and conv.in_channels >= MIN_CHANNELS and x.dim() == 4 and x.shape[-2] * x.shape[-1] >= MIN_PIXELS
        and x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
    )


def conv3x3(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, by Winograd where :func:`winograd_applies`. The transformed filter is cached per conv (outside
    the module, so copying or pickling a model is unaffected) and recomputed when the weight changes: another
    tensor, new data, or an in-place update such as an optimizer step or load_state_dict."""
    if not winograd_applies(conv, x):
        return conv(x)
    weight = conv.weight
    state = (weight.data_ptr(), weight._version)
    cached = _FILTERS.get(conv)
    if cached is None or cached[0]() is not weight or cached[1] != state:
        cached = (weakref.ref(weight), state, transform_filter(weight.detach()))
        _FILTERS[conv] = cached
    return winograd_conv3x3(x, cached[2], conv.bias)
