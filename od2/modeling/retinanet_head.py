"""RetinaNet head: classification and box towers whose conv weights are shared across pyramid levels.

As the original (and detectron2), each level has its own norm layers (own affine parameters and
statistics) while the 3x3 conv weights are shared. Class predictor bias = -log((1 - p) / p).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from od2.layers import NormAct, SeparableConv2d, make_conv, norm_uses_bias


class SharedTower(nn.Module):
    """``num_convs`` x (shared 3x3 conv -> per-level norm and activation), [B, C, H, W] -> [B, C, H, W].

    ``separable`` makes each conv depthwise 3x3 + pointwise 1x1 (the official EfficientDet head).
    """

    def __init__(self, channels: int, num_convs: int, num_levels: int, norm: str, activation: str,
                 separable: bool = False):
        super().__init__()
        self.convs = nn.ModuleList(
            make_conv(channels, channels, 3, bias=norm_uses_bias(norm), separable=separable) for _ in range(num_convs)
        )
        self.norm_acts = nn.ModuleList(
            nn.ModuleList(NormAct(norm, channels, activation) for _ in range(num_levels)) for _ in range(num_convs)
        )

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        for conv, norm_acts in zip(self.convs, self.norm_acts):
            x = norm_acts[level](conv(x), conv.weight)
        return x


class RetinaNetHead(nn.Module):
    """Per-level logits and box deltas.

    Input: list of [B, C, H_l, W_l] features. Output: (logits, deltas), each a list over levels of
    [B, H_l * W_l * A, K] and [B, H_l * W_l * A, 4], flattened in (y, x, anchor) order.

    ``separable=True`` makes every conv, the two predictors included, depthwise 3x3 + pointwise 1x1 as in the
    official EfficientDet; the original object_detection2 used regular 3x3 convs.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_levels: int,
                 num_convs: int = 4, norm: str = "", activation: str = "relu", prior_prob: float = 0.01,
                 separable: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.cls_tower = SharedTower(in_channels, num_convs, num_levels, norm, activation, separable)
        self.box_tower = SharedTower(in_channels, num_convs, num_levels, norm, activation, separable)
        self.cls_score = make_conv(in_channels, num_anchors * num_classes, 3, separable=separable)
        self.bbox_pred = make_conv(in_channels, num_anchors * 4, 3, separable=separable)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, SeparableConv2d):
                # The depthwise kernel keeps its input's scale (variance 1/k^2 per tap), so the pointwise N(0, 0.01)
                # sets the output scale as in a regular conv instead of multiplying two small inits.
                kernel_area = module.depthwise.kernel_size[0] * module.depthwise.kernel_size[1]
                nn.init.normal_(module.depthwise.weight, std=kernel_area ** -0.5)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _flatten(x: torch.Tensor, last: int) -> torch.Tensor:
        """[B, A * last, H, W] -> [B, H * W * A, last]."""
        batch, _, h, w = x.shape
        return x.view(batch, -1, last, h, w).permute(0, 3, 4, 1, 2).reshape(batch, -1, last)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for level, feature in enumerate(features):
            logits.append(self._flatten(self.cls_score(self.cls_tower(feature, level)), self.num_classes))
            deltas.append(self._flatten(self.bbox_pred(self.box_tower(feature, level)), 4))
        return logits, deltas
