"""Building blocks shared by backbones, necks and heads."""

from .activations import get_activation
from .conv_norm import ConvNormAct, NormAct, SeparableConv2d, make_conv
from .fusion import FUSE_TYPES, Fusion
from .norms import get_norm, norm_includes_activation, norm_uses_bias

__all__ = [
    "FUSE_TYPES",
    "ConvNormAct",
    "Fusion",
    "NormAct",
    "SeparableConv2d",
    "get_activation",
    "get_norm",
    "make_conv",
    "norm_includes_activation",
    "norm_uses_bias",
]
