"""PConv neck, the original's simplified pyramid convolution ``pconv.py`` at ``f50380a`` (original-spec §13).

Named after SEPC's PConv (Wang et al. 2020, "Scale-Equalizing Pyramid Convolution") but **not** the paper's
module: it follows the original, which the log's "PConv" row ran. Differences from the paper: every kernel is 1x1
(no 3x3, no deformable kernels), there is no integrated BN (the paper's BN with statistics pooled over all levels),
and a layer has one norm, shared by all levels (with ``BN`` it is called once per level, so batch statistics are per
level while the affine parameters and running averages are common).

- Each input C_k is projected to ``out_channels`` by its own 1x1 conv (with bias, no norm, no activation).
- ``num_layers`` stacked PConv layers follow. In a layer, level l with its finer neighbour l-1 and coarser l+1 gives

      y_l = act(norm( avgpool2x2/2 'SAME'(conv_a(x_{l-1})) + conv_b(x_l) + nearest_resize(conv_c(x_{l+1}), x_l) ))

  where a missing neighbour (finest / coarsest level) is left out. conv_a, conv_b, conv_c (1x1, all with bias,
  even before a norm, as the original) and the norm are **shared by all levels** of a layer (the original's
  ``repeat{r}`` scope with reuse); each layer has its own weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from od2.layers import NormAct

from .common import downsample_same, init_neck_convs, pyramid_levels, upsample_nearest

__all__ = ["PConv", "PConvLayer"]


class PConvLayer(nn.Module):
    """One PConv layer: a list of L maps [B, C, H_l, W_l] (finest first) -> L maps of the same shapes.

    Args:
        channels: C, the channels of every level (in and out).
        norm, activation: the single norm + activation applied after the three-way sum at every level.
    """

    def __init__(self, channels: int, norm: str = "", activation: str = "relu"):
        super().__init__()
        self.conv_finer = nn.Conv2d(channels, channels, 1)  # conv_a, on x_{l-1}
        self.conv_same = nn.Conv2d(channels, channels, 1)  # conv_b, on x_l
        self.conv_coarser = nn.Conv2d(channels, channels, 1)  # conv_c, on x_{l+1}
        self.norm_act = NormAct(norm, channels, activation)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for idx, x in enumerate(inputs):
            y = self.conv_same(x)
            if idx > 0:
                # A 1x1 conv with bias commutes with the average pool (each pooled pixel is a convex combination of
                # input pixels, the edge windows included), so pooling first is the same y at a quarter of the cost.
                y = y + self.conv_finer(downsample_same(inputs[idx - 1], y.shape[-2:]))
            if idx < len(inputs) - 1:
                y = y + upsample_nearest(self.conv_coarser(inputs[idx + 1]), y.shape[-2:])
            # SN needs one conv kernel to normalise by: conv_b's, the one on the level's own map. Being shared, it
            # then runs one power-iteration step per level, i.e. L steps per layer and forward in training.
            outputs.append(self.norm_act(y, self.conv_same.weight))
        return outputs


class PConv(nn.Module):
    """The original's PConv neck: per-level 1x1 projections then ``num_layers`` level-shared PConv layers.

    Args:
        in_channels: channels of each input level, finest first, keys ``C<k>`` with consecutive k,
            e.g. {"C3": 512, "C4": 1024, "C5": 2048, "C6": 256, "C7": 256}.
        out_channels: channels of the projections, of every layer and of every output.
        norm, activation: for each PConv layer's shared norm + activation (``od2.layers`` names).
        num_layers: how many PConv layers are stacked (the original's ``PCONV.NUM_CONVS``, 3).
    Input: dict of C_k [B, in_channels[C_k], H_k, W_k] with H_{k+1} = ceil(H_k / 2), W likewise.
    Output: dict of P_k [B, out_channels, H_k, W_k], stride 2**k.
    """

    def __init__(self, in_channels: dict[str, int], out_channels: int = 256, norm: str = "",
                 activation: str = "relu", num_layers: int = 3):
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.in_features = list(in_channels)
        levels = pyramid_levels(self.in_features)
        self.projections = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels.values())
        self.layers = nn.ModuleList(PConvLayer(out_channels, norm, activation) for _ in range(num_layers))
        self.out_features = [f"P{k}" for k in levels]
        self.out_channels = {name: out_channels for name in self.out_features}
        self.strides = {name: 2 ** k for name, k in zip(self.out_features, levels)}
        init_neck_convs(self)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        maps = [proj(features[name]) for proj, name in zip(self.projections, self.in_features)]
        for layer in self.layers:
            maps = layer(maps)
        return dict(zip(self.out_features, maps))
