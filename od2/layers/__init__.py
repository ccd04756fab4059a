"""Building blocks shared by backbones, necks and heads."""

from .activations import get_activation
from .conv_norm import ConvNormAct, NormAct
from .fusion import FUSE_TYPES, Fusion
from .norms import get_norm, norm_includes_activation, norm_uses_bias

__all__ = [
    "FUSE_TYPES",
    "ConvNormAct",
    "Fusion",
    "NormAct",
    "get_activation",
    "get_norm",
    "norm_includes_activation",
    "norm_uses_bias",
]
