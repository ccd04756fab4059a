"""FPN neck, TF-OD-API style as the original (original-spec §3.3).

Top-down: a 1x1 lateral projection (with bias, no norm) of each input; the coarsest is the seed; each
finer level fuses its projection with the nearest-resized merged map above it (a sum, or with
``fuse_type="wsum"`` the fast normalised weighted sum of ``od2.layers.Fusion``, the original's
``FPN.FUSE_TYPE``). Every merged map goes through a 3x3 output conv + norm + activation to give P3..P5.
P6 and P7 are 3x3/2 convs (+ norm + activation) from C5 (the original's ``LastLevelP6P7`` on the
bottom-up C5, not on P5); ``extra_from="P5"`` stacks them on P5 instead (torchvision's ``retinanet_resnet50_fpn``).
``activate_outputs=False`` is detectron2's and torchvision's layout: no activation on any output level, and the
activation only between stacked extra convs (``P7 = conv(act(P6))``, their ``LastLevelP6P7``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from od2.layers import ConvNormAct, Fusion
from od2.layers.activations import get_activation

from .common import init_neck_convs, pyramid_levels

EXTRA_FROM_CHOICES = ("C5", "P5")


class FPN(nn.Module):
    """Feature pyramid P3..P7 from backbone features C3..C5.

    Args:
        in_channels: channels of each input level, finest first, e.g. {"C3": 512, "C4": 1024, "C5": 2048}.
        out_channels: channels of every output level.
        norm, activation: for the 3x3 output convs and the P6/P7 convs.
        num_extra_levels: stride-2 convs stacked on the coarsest input (2 gives P6, P7).
        fuse_type: how a lateral and the upsampled coarser map are merged: ``sum`` or ``wsum``.
        extra_from: the input of the first extra conv: ``"C5"`` (the coarsest input level) or ``"P5"`` (the coarsest
            merged output).
        activate_outputs: apply the activation to every output level (the original); False applies it only to the
            input of each extra conv after the first (detectron2, torchvision).
    Input: dict of [B, C_k, H/s_k, W/s_k]. Output: dict P3..P7 of [B, out_channels, ceil(H/s), ceil(W/s)].
    """

    def __init__(self, in_channels: dict[str, int], out_channels: int = 256, norm: str = "",
                 activation: str = "relu", num_extra_levels: int = 2, fuse_type: str = "sum",
                 extra_from: str = "C5", activate_outputs: bool = True):
        super().__init__()
        if extra_from not in EXTRA_FROM_CHOICES:
            raise ValueError(f"extra_from must be one of {EXTRA_FROM_CHOICES}, got {extra_from!r}")
        self.in_features = list(in_channels)
        first_level = pyramid_levels(self.in_features)[0]
        self.extra_from_output = extra_from == "P5"
        output_activation = activation if activate_outputs else ""
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels.values())
        self.fuse = nn.ModuleList(Fusion(2, fuse_type) for _ in self.in_features[:-1])
        self.output = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm=norm, activation=output_activation) for _ in in_channels
        )
        extra_in = out_channels if self.extra_from_output else in_channels[self.in_features[-1]]
        self.extra = nn.ModuleList()
        for i in range(num_extra_levels):
            self.extra.append(ConvNormAct(extra_in if i == 0 else out_channels, out_channels, 3, 2, norm,
                                          output_activation))
        # between stacked extra convs when the outputs themselves stay linear; never in place, as its input is an output
        self.between_extra = nn.Identity() if activate_outputs else get_activation(activation)
        if hasattr(self.between_extra, "inplace"):
            self.between_extra.inplace = False
        num_levels = len(in_channels) + num_extra_levels
        self.out_features = [f"P{first_level + i}" for i in range(num_levels)]
        self.out_channels = {name: out_channels for name in self.out_features}
        self.strides = {name: 2 ** int(name[1:]) for name in self.out_features}
        init_neck_convs(self)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = [features[name] for name in self.in_features]
        merged = self.lateral[-1](inputs[-1])
        outputs = [self.output[-1](merged)]
        for idx in range(len(inputs) - 2, -1, -1):
            lateral = self.lateral[idx](inputs[idx])
            merged = self.fuse[idx]([lateral, F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")])
            outputs.insert(0, self.output[idx](merged))
        extra = outputs[-1] if self.extra_from_output else inputs[-1]
        for i, conv in enumerate(self.extra):
            extra = conv(extra if i == 0 else self.between_extra(extra))
            outputs.append(extra)
        return dict(zip(self.out_features, outputs))
