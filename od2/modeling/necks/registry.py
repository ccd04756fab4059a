"""The registered necks: ``MODEL.NECK.NAME`` -> :class:`~od2.modeling.registration.NeckEntry`.

Adding a neck: its module (a class satisfying :class:`~od2.modeling.protocols.Neck`) and one entry in
:data:`NECKS` with its builder from config and its config section (which must have ``IN_FEATURES``,
``OUT_CHANNELS``, ``NORM`` and ``ACTIVATION_FN``; ``od2.modeling.build`` checks those and ``FUSE_TYPE``).
"""

from __future__ import annotations

from od2.modeling.protocols import Neck
from od2.modeling.registration import ConfigSection, NeckEntry
from od2.utils.cfg_node import CfgNode, check_choice

from .bifpn import BiFPN
from .fpn import EXTRA_FROM_CHOICES, FPN
from .pconv import PConv
from .twoway_fpn import TwoWayFPN

__all__ = ["NECKS"]

C3_TO_C7 = ["C3", "C4", "C5", "C6", "C7"]


def _fpn(section: CfgNode, in_channels: dict[str, int], num_extra: int) -> Neck:
    check_choice("MODEL.FPN.EXTRA_FROM", section.EXTRA_FROM, list(EXTRA_FROM_CHOICES))
    return FPN(in_channels, section.OUT_CHANNELS, norm=section.NORM, activation=section.ACTIVATION_FN,
               num_extra_levels=num_extra, fuse_type=section.FUSE_TYPE,
               extra_from=section.EXTRA_FROM,
               activate_outputs=section.ACTIVATE_OUTPUTS)


def _twoway_fpn(section: CfgNode, in_channels: dict[str, int], num_extra: int) -> Neck:
    return TwoWayFPN(in_channels, section.OUT_CHANNELS, norm=section.NORM, activation=section.ACTIVATION_FN,
                     fuse_type=section.FUSE_TYPE)


def _pconv(section: CfgNode, in_channels: dict[str, int], num_extra: int) -> Neck:
    return PConv(in_channels, section.OUT_CHANNELS, norm=section.NORM, activation=section.ACTIVATION_FN,
                 num_layers=section.NUM_CONVS)


def _bifpn(section: CfgNode, in_channels: dict[str, int], num_extra: int) -> Neck:
    return BiFPN(in_channels, section.OUT_CHANNELS, norm=section.NORM, activation=section.ACTIVATION_FN,
                 num_cells=section.REPEAT, separable=section.SEPARABLE_CONV,
                 downsample_kernel=section.DOWNSAMPLE_KERNEL, num_extra_levels=num_extra)


NECKS: dict[str, NeckEntry] = {
    entry.name: entry
    for entry in (
        NeckEntry("fpn", FPN, ConfigSection("FPN", {
            "IN_FEATURES": ["C3", "C4", "C5"], "OUT_CHANNELS": 256, "NORM": "", "ACTIVATION_FN": "relu",
            "FUSE_TYPE": "sum", "EXTRA_FROM": "C5", "ACTIVATE_OUTPUTS": True,
        }), _fpn, makes_levels=True),
        NeckEntry("twoway_fpn", TwoWayFPN, ConfigSection("TWOWAYFPN", {
            "IN_FEATURES": C3_TO_C7, "OUT_CHANNELS": 256, "NORM": "", "ACTIVATION_FN": "relu", "FUSE_TYPE": "wsum",
        }), _twoway_fpn, makes_levels=False),
        NeckEntry("pconv", PConv, ConfigSection("PCONV", {
            "IN_FEATURES": C3_TO_C7, "OUT_CHANNELS": 256, "NORM": "", "ACTIVATION_FN": "relu", "NUM_CONVS": 3,
        }), _pconv, makes_levels=False),
        NeckEntry("bifpn", BiFPN, ConfigSection("BIFPN", {
            "IN_FEATURES": C3_TO_C7, "OUT_CHANNELS": 64, "NORM": "GN", "ACTIVATION_FN": "swish", "REPEAT": 3,
            "SEPARABLE_CONV": False, "DOWNSAMPLE_KERNEL": 2,
        }), _bifpn, makes_levels=True),
    )
}
