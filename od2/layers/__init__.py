"""Building blocks shared by backbones, necks and heads."""

from .activations import get_activation
from .norms import get_norm, norm_uses_bias

__all__ = ["get_activation", "get_norm", "norm_uses_bias"]
