"""The registration of a backbone or neck: its name, its builder from config and the config section it owns.

``od2.modeling.backbones.BACKBONES`` and ``od2.modeling.necks.NECKS`` are plain dicts of these entries. Adding a
backbone or neck is its module plus one entry there: the entry's section (``MODEL.<SECTION>``) and its defaults
join the config schema (:func:`od2.config.get_cfg`), ``MODEL.BACKBONE.NAME`` / ``MODEL.NECK.NAME`` accept its name,
and :func:`od2.modeling.build.build_model` calls its builder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from od2.utils.cfg_node import CfgNode

from .protocols import Backbone, Neck

__all__ = ["BackboneEntry", "ConfigSection", "NeckEntry", "unique_sections"]


@dataclass(frozen=True)
class ConfigSection:
    """The config section ``MODEL.<name>`` and the default of each of its keys.

    A default's type is the type a config file may give the key (see :mod:`od2.config.defaults`).
    """

    name: str
    defaults: Mapping[str, Any]


# (section MODEL.<SECTION>, norm factory from MODEL.BACKBONE.NORM, MODEL.BACKBONE.FREEZE_AT,
#  MODEL.BACKBONE.PRETRAINED) -> backbone
BackboneBuilder = Callable[[CfgNode, Callable[[int], nn.Module], int, bool], Backbone]
# (section MODEL.<SECTION>, input channels by level name (finest first), number of levels to add above the inputs)
# -> neck
NeckBuilder = Callable[[CfgNode, dict[str, int], int], Neck]


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone.

    Attributes:
        name: its ``MODEL.BACKBONE.NAME``.
        constructor: its class (plain constructor arguments); ``pixel_mean`` / ``pixel_std`` are readable on it.
        section: its family's section (several backbones may share one): the C6/C7 keys of
            ``BackboneWithExtraLevels`` (``MAKE_C6C7``, ``OUT_CHANNELS``, ``NORM``, ``ACTIVATION_FN``) and the
            family's own keys (``MODEL.RESNETS.DEPTH``).
        build: the backbone from its section and the ``MODEL.BACKBONE`` keys.
        ships_weights: whether ``MODEL.BACKBONE.PRETRAINED`` has offline ImageNet weights to load.
    """

    name: str
    constructor: Callable[..., Backbone]
    section: ConfigSection
    build: BackboneBuilder
    ships_weights: bool = False


@dataclass(frozen=True)
class NeckEntry:
    """A registered neck.

    Attributes:
        name: its ``MODEL.NECK.NAME``.
        constructor: its class (plain constructor arguments).
        section: its own section, e.g. ``MODEL.FPN``, with at least ``IN_FEATURES``, ``OUT_CHANNELS``, ``NORM``
            and ``ACTIVATION_FN``.
        build: the neck from its section, the backbone's channels and how many levels to add above them.
        makes_levels: whether it can make levels above its inputs itself (else they come from MAKE_C6C7).
    """

    name: str
    constructor: Callable[..., Neck]
    section: ConfigSection
    build: NeckBuilder
    makes_levels: bool


def unique_sections(entries: Iterable[BackboneEntry | NeckEntry]) -> dict[str, dict[str, Any]]:
    """Section name -> defaults, in registration order, for the entries' sections.

    Raises ValueError when two entries give one section name different defaults (the config could hold only one).
    """
    sections: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name, defaults = entry.section.name, dict(entry.section.defaults)
        if sections.setdefault(name, defaults) != defaults:
            raise ValueError(f"{entry.name!r} registers section MODEL.{name} with defaults {defaults}, but another "
                             f"entry gives it {sections[name]}")
    return sections
