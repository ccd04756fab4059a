"""Two-way FPN neck, the original's ``twfpn.py`` at ``f50380a`` (original-spec §12).

From EfficientPS's 2-way FPN (Mohan & Valada 2020): two pyramids are built side by side from the same inputs
C3..C7, each with its **own** 1x1 lateral convs (+ norm + activation, no bias since normed):

- top-down (coarse -> fine): ``TD_L = t_L``; ``TD_k = fuse(nearest_resize(TD_{k+1} to C_k's size), t_k)``;
- bottom-up (fine -> coarse): ``BU_first = b_first``; ``BU_k = fuse(avgpool2x2/2 'SAME'(BU_{k-1}), b_k)``;

where ``fuse`` is the fast normalised weighted sum (``wsum``, :class:`od2.layers.Fusion`, its own 2 weights per
node), or a plain sum. Each output is ``P_k = act(norm(DW3x3(TD_k + BU_k)))`` with a **depthwise-only** 3x3 conv
(no pointwise conv; the original's slim separable conv with ``num_outputs=None``). Every level has its own weights.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from od2.layers import ConvNormAct, Fusion

from .common import downsample_same, init_neck_convs, pyramid_levels, upsample_nearest

__all__ = ["TwoWayFPN"]


class TwoWayFPN(nn.Module):
    """Two-way FPN: P_k for every input C_k (see the module docstring).

    Args:
        in_channels: channels of each input level, finest first, keys ``C<k>`` with consecutive k,
            e.g. {"C3": 512, "C4": 1024, "C5": 2048, "C6": 256, "C7": 256}.
        out_channels: channels of both branches and of every output.
        norm, activation: for the 1x1 lateral convs and the depthwise output convs (``od2.layers`` names).
        fuse_type: ``wsum`` (the original's fusion of each branch's two inputs) or ``sum``.
    Input: dict of C_k [B, in_channels[C_k], H_k, W_k] with H_{k+1} = ceil(H_k / 2), W likewise.
    Output: dict of P_k [B, out_channels, H_k, W_k], stride 2**k.
    """

    def __init__(self, in_channels: dict[str, int], out_channels: int = 256, norm: str = "",
                 activation: str = "relu", fuse_type: str = "wsum"):
        super().__init__()
        self.in_features = list(in_channels)
        levels = pyramid_levels(self.in_features)
        num_levels = len(levels)

        def lateral() -> nn.ModuleList:
            return nn.ModuleList(
                ConvNormAct(c, out_channels, 1, norm=norm, activation=activation) for c in in_channels.values()
            )

        self.top_down_lateral = lateral()  # t_k
        self.bottom_up_lateral = lateral()  # b_k: separate weights, the two branches see C_k differently
        # top_down_fuse[i] makes TD at level i (the coarsest has no fusion); bottom_up_fuse[i] makes BU at level i + 1
        self.top_down_fuse = nn.ModuleList(Fusion(2, fuse_type) for _ in range(num_levels - 1))
        self.bottom_up_fuse = nn.ModuleList(Fusion(2, fuse_type) for _ in range(num_levels - 1))
        self.output = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm=norm, activation=activation, groups=out_channels)
            for _ in range(num_levels)
        )
        self.out_features = [f"P{k}" for k in levels]
        self.out_channels = {name: out_channels for name in self.out_features}
        self.strides = {name: 2 ** k for name, k in zip(self.out_features, levels)}
        init_neck_convs(self)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = [features[name] for name in self.in_features]
        num_levels = len(inputs)
        top_down: list[torch.Tensor] = [self.top_down_lateral[-1](inputs[-1])]  # coarsest first while building
        for idx in range(num_levels - 2, -1, -1):
            lateral = self.top_down_lateral[idx](inputs[idx])
            coarser = upsample_nearest(top_down[0], lateral.shape[-2:])
            top_down.insert(0, self.top_down_fuse[idx]([coarser, lateral]))
        bottom_up = self.bottom_up_lateral[0](inputs[0])
        outputs = [self.output[0](top_down[0] + bottom_up)]
        for idx in range(1, num_levels):
            lateral = self.bottom_up_lateral[idx](inputs[idx])
            bottom_up = self.bottom_up_fuse[idx - 1]([downsample_same(bottom_up, lateral.shape[-2:]), lateral])
            outputs.append(self.output[idx](top_down[idx] + bottom_up))
        return dict(zip(self.out_features, outputs))
