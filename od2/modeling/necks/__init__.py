"""Necks: turn backbone features C3..C5 (or C3..C7) into pyramid levels P3..P7.

Every neck takes ``in_channels`` (input name -> channels, finest first) and has ``in_features``,
``out_features``, ``out_channels`` and ``strides``; ``forward(dict) -> dict`` maps C_k to P_k
(:class:`~od2.modeling.protocols.Neck`). :data:`NECKS` registers them by ``MODEL.NECK.NAME``.
"""

from .bifpn import BiFPN
from .fpn import FPN
from .pconv import PConv
from .registry import NECKS
from .twoway_fpn import TwoWayFPN

__all__ = ["FPN", "NECKS", "BiFPN", "PConv", "TwoWayFPN"]
