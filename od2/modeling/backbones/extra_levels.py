"""C6 / C7 made inside the backbone by stride-2 3x3 convs, the original's ``MAKE_C6C7`` (original-spec §3.2, §14).

The original's TwoWayFPN, PConv and EfficientDet rows feed their necks C3..C7, where C6 = conv3x3/2(C5) and
C7 = conv3x3/2(C6) (``RESNETS.MAKE_C6C7: C6C7``, ``EFFICIENTNETS.MAKE_C6C7``), each conv followed by a norm and
an activation, Xavier-initialised. (The FPN instead makes P6/P7 itself, and the official EfficientDet with a
1x1 conv and max pooling; see :class:`~od2.modeling.necks.bifpn.BiFPN`.)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from od2.layers import ConvNormAct

__all__ = ["C6C7_DEFAULTS", "MAKE_C6C7_CHOICES", "BackboneWithExtraLevels"]

# MAKE_C6C7 value -> number of extra levels.
MAKE_C6C7_CHOICES: dict[str, int] = {"": 0, "C6": 1, "C6C7": 2}
# The keys every backbone family's config section has for these levels (original-spec §3.2): which levels, their
# channels, norm and activation.
C6C7_DEFAULTS: dict[str, Any] = {"MAKE_C6C7": "", "OUT_CHANNELS": 256, "NORM": "EvoNormS0", "ACTIVATION_FN": "NA"}


class BackboneWithExtraLevels(nn.Module):
    """A bottom-up backbone (``body``) whose outputs gain stride-2 levels stacked on its coarsest one.

    ``body`` keeps its own submodule names under ``body.``, so weights meant for the bare backbone load into
    ``self.body``. ``pixel_mean`` / ``pixel_std`` are the body's.

    Args:
        body: backbone with ``out_channels`` / ``strides`` dicts whose last entry is the coarsest level (C5).
        num_levels: how many levels to add (1 gives C6, 2 gives C6 and C7).
        channels: output channels of each added level.
        norm, activation: after each added conv (``get_norm`` / ``get_activation`` names).
    Output: the body's dict plus ``C6`` [B, channels, ceil(H5/2), ceil(W5/2)] (and ``C7`` from C6 likewise).
    """

    def __init__(self, body: nn.Module, num_levels: int, channels: int = 256, norm: str = "",
                 activation: str = "NA") -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.body = body
        self.pixel_mean, self.pixel_std = body.pixel_mean, body.pixel_std
        top = list(body.out_channels)[-1]
        self.source = top
        first_new = int(top[1:]) + 1
        self.new_levels = [f"C{first_new + i}" for i in range(num_levels)]
        in_channels = [body.out_channels[top]] + [channels] * (num_levels - 1)
        self.convs = nn.ModuleList(ConvNormAct(c, channels, 3, 2, norm, activation) for c in in_channels)
        for conv in self.convs.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        self.out_channels = dict(body.out_channels) | {name: channels for name in self.new_levels}
        self.strides = dict(body.strides) | {name: 2 ** int(name[1:]) for name in self.new_levels}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.body(x)
        level = features[self.source]
        for name, conv in zip(self.new_levels, self.convs):
            level = conv(level)
            features[name] = level
        return features
