"""Necks: turn backbone features C3..C5 into pyramid levels P3..P7."""

from .fpn import FPN, ConvNormAct

__all__ = ["FPN", "ConvNormAct"]
