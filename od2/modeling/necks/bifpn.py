"""BiFPN neck (EfficientDet's bidirectional feature pyramid), as the original implements it (original-spec §14).

Structure, with L pyramid levels indexed finest (0) to coarsest (L-1), all maps W = ``out_channels`` wide:

1. Input projections: every input level C_k goes through its own 1x1 conv (no bias) + norm, no activation, even
   when it already has W channels (the original projects them all).
   Optional extra levels (``num_extra_levels``, the EfficientDet paper / official way, not the original's):
   P_{top+1} = maxpool(norm(conv1x1(C_top))) from the *raw* coarsest input with its own conv, then each further
   level is a max pool of the previous one. The original instead takes C6/C7 from the backbone (3x3/2 convs outside
   the neck), so its config has ``num_extra_levels=0`` and five input levels.
2. ``num_cells`` cells, each with its own weights; a cell's outputs feed the next cell. In a cell, with ``in_k``
   its inputs:

   - top-down, coarse to fine: ``td_{L-1} = in_{L-1}``;
     ``td_k = conv(act(wsum(up(td_{k+1}), in_k)))`` for k = L-2 .. 0; ``out_0 = td_0``;
   - bottom-up, fine to coarse: ``out_k = conv(act(wsum(in_k, down(out_{k-1}), td_k)))`` for k = 1 .. L-2;
     ``out_{L-1} = conv(act(wsum(down(out_{L-2}), in_{L-1})))``.

   ``wsum`` is the fast normalised fusion ``sum_i relu(w_i) x_i / (sum_i relu(w_i) + 1e-4)`` with its own
   scalars per node (:class:`od2.layers.Fusion`); ``act`` is the configured activation (swish in the original)
   applied *before* the conv; ``conv`` is a 3x3 conv + norm with no activation after it: a regular conv in the
   original, a separable one (depthwise 3x3 + pointwise 1x1) in the paper (``separable=True``).
   So per cell: 2 (L-1) fusion nodes and 2 (L-1) convs.

Resampling works for any map size, so odd image sizes need no padding to a multiple of 128:

- ``up`` is nearest resizing to the finer map's size (:func:`upsample_nearest`); when that is exactly twice the
  coarser size (sizes divisible by 2**levels, the original's SIZE_ALIGN 128), it is exact 2x nearest upsampling;
- ``down`` is a TF 'SAME' max pool with stride 2 (:func:`same_max_pool2d`): output ceil(h/2), the padding split
  as TF does it (the extra row/column at the bottom/right) and padded cells never win. The original pools 2x2/2;
  the paper/official version 3x3/2 (``downsample_kernel=3``, used for the extra levels too).

Backbones give C_{k+1} = ceil(C_k / 2), which is what ``down`` produces; other input sizes are rejected.

Comparison with the official EfficientDet (automl / effdet) BiFPN: with ``separable=True``,
``downsample_kernel=3``, ``num_extra_levels=2`` and norm "BN" ours is close but not identical. The official first
cell projects C4 and C5 a second time, with separate 1x1 conv + BN, for their bottom-up nodes (ours reuses the one
projection per level): for EfficientDet-D0 (C4/C5 = 112/320 channels, W = 64) that is (112 + 320) * 64 + 2 * 2 * 64
= 27,904 parameters more on the official side. The official 24 cell separable convs and 6 resampling 1x1 convs
also keep a bias before BN, which ours drop (a bias before a norm is redundant): 30 * 64 = 1,920 more. Together
they are exactly effdet 0.4.1's ``tf_efficientdet_d0`` BiFPN count (tests/modeling/test_param_counts.py).
The extra level's conv exists in ours even when C_top already has W channels (the official skips it then; not
the case for D0).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from od2.layers import ConvNormAct, Fusion, get_activation

from .common import init_neck_convs, pyramid_levels, same_max_pool2d, upsample_nearest

__all__ = ["BiFPN", "BiFPNCell"]


class BiFPNCell(nn.Module):
    """One BiFPN cell over L >= 2 levels of [B, W, H_k, W_k] (finest first) -> the same shapes.

    ``td_fusions[k]``/``td_convs[k]`` make the top-down node of level k (k = 0 .. L-2);
    ``bu_fusions[k-1]``/``bu_convs[k-1]`` the bottom-up node of level k (k = 1 .. L-1). See the module docstring.
    """

    def __init__(self, num_levels: int, channels: int, norm: str, activation: str, separable: bool,
                 downsample_kernel: int):
        super().__init__()
        if num_levels < 2:
            raise ValueError(f"a BiFPN cell needs at least 2 levels, got {num_levels}")
        self.num_levels, self.downsample_kernel = num_levels, downsample_kernel

        def conv() -> nn.Module:
            # no activation after the conv: the next node applies it to its fused input (pre-activation)
            return ConvNormAct(channels, channels, 3, norm=norm, activation="NA", separable=separable)

        self.td_fusions = nn.ModuleList(Fusion(2, "wsum") for _ in range(num_levels - 1))
        self.td_convs = nn.ModuleList(conv() for _ in range(num_levels - 1))
        # intermediate bottom-up nodes fuse 3 inputs (input, pooled finer output, top-down); the top node has no
        # top-down node of its own (td_{L-1} is in_{L-1}), so it fuses 2
        self.bu_fusions = nn.ModuleList(Fusion(3 if k < num_levels - 1 else 2, "wsum") for k in range(1, num_levels))
        self.bu_convs = nn.ModuleList(conv() for _ in range(num_levels - 1))
        self.act = get_activation(activation)  # stateless, so one module serves every node

    def _down(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = same_max_pool2d(x, self.downsample_kernel, 2)
        if out.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"BiFPN levels must halve with ceil: pooling {tuple(x.shape[-2:])} gives "
                             f"{tuple(out.shape[-2:])}, but the coarser level is {tuple(target.shape[-2:])}")
        return out

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        num = self.num_levels
        if len(inputs) != num:
            raise ValueError(f"BiFPN cell built for {num} levels got {len(inputs)}")
        td = list(inputs)  # td_{L-1} is in_{L-1}; the finer entries are overwritten coarse to fine
        for k in range(num - 2, -1, -1):
            fused = self.td_fusions[k]([upsample_nearest(td[k + 1], inputs[k].shape[-2:]), inputs[k]])
            td[k] = self.td_convs[k](self.act(fused))
        outputs = [td[0]]
        for k in range(1, num):
            down = self._down(outputs[k - 1], inputs[k])
            if k < num - 1:
                fused = self.bu_fusions[k - 1]([inputs[k], down, td[k]])
            else:
                fused = self.bu_fusions[k - 1]([down, inputs[k]])
            outputs.append(self.bu_convs[k - 1](self.act(fused)))
        return outputs


class BiFPN(nn.Module):
    """Bidirectional feature pyramid: inputs C_k (finest first) -> P_first .. P_{first + L - 1}, all W channels.

    Args:
        in_channels: channels per input level, finest first, e.g. {"C3": 40, "C4": 112, "C5": 320}
            (level k has stride 2**k; levels must be consecutive).
        out_channels: W, the width of every node and output.
        norm: ``od2.layers.get_norm`` name for the input projections, the extra level's conv and the cell convs.
        activation: applied to each fused map before its cell conv (swish in the original).
        num_cells: how many cells (own weights each) are stacked.
        num_extra_levels: coarser levels made from the coarsest input (0 in the original; 2 in the paper).
        separable: separable (depthwise 3x3 + pointwise 1x1) cell convs (paper) instead of regular 3x3 (original).
        downsample_kernel: kernel of the stride-2 'SAME' max pools (cells and extra levels): 2 in the original,
            3 in the paper/official version.
    Input: dict of [B, C_k, H_k, W_k] with H_{k+1} = ceil(H_k / 2). Output: dict P_k of [B, W, H_k, W_k], extra
    levels continuing the ceil halving.
    """

    def __init__(self, in_channels: dict[str, int], out_channels: int = 64, norm: str = "GN",
                 activation: str = "swish", num_cells: int = 3, num_extra_levels: int = 0, separable: bool = False,
                 downsample_kernel: int = 2):
        super().__init__()
        self.in_features = list(in_channels)
        levels = pyramid_levels(self.in_features)
        if num_cells < 1 or num_extra_levels < 0 or downsample_kernel < 1:
            raise ValueError("need num_cells >= 1, num_extra_levels >= 0 and downsample_kernel >= 1")
        num_levels = len(levels) + num_extra_levels
        if num_levels < 2:
            raise ValueError(f"BiFPN needs at least 2 levels, got {num_levels}")
        self.num_extra_levels, self.downsample_kernel = num_extra_levels, downsample_kernel

        self.input_proj = nn.ModuleList(
            ConvNormAct(c, out_channels, 1, norm=norm, activation="NA") for c in in_channels.values()
        )
        # the official P6: its own 1x1 conv + norm on the raw coarsest input, then the max pool (in forward)
        self.extra_proj = (ConvNormAct(in_channels[self.in_features[-1]], out_channels, 1, norm=norm,
                                       activation="NA") if num_extra_levels else None)
        self.cells = nn.ModuleList(
            BiFPNCell(num_levels, out_channels, norm, activation, separable, downsample_kernel)
            for _ in range(num_cells)
        )
        self.out_features = [f"P{levels[0] + i}" for i in range(num_levels)]
        self.out_channels = {name: out_channels for name in self.out_features}
        self.strides = {name: 2 ** int(name[1:]) for name in self.out_features}
        init_neck_convs(self)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = [features[name] for name in self.in_features]
        levels = [proj(x) for proj, x in zip(self.input_proj, inputs)]
        if self.extra_proj is not None:
            extra = self.extra_proj(inputs[-1])
            for _ in range(self.num_extra_levels):
                extra = same_max_pool2d(extra, self.downsample_kernel, 2)
                levels.append(extra)
        for cell in self.cells:
            levels = cell(levels)
        return dict(zip(self.out_features, levels))
