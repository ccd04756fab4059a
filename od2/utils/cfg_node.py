"""The config tree's node type, its error and the choice check: generic, so that any layer may use them.

:mod:`od2.config` builds od2's schema (core defaults plus the sections that backbone and neck registrations own)
on top of these, and re-exports them; ``od2.modeling`` uses them without importing the schema.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


class CfgNode(dict):
    """A dict with attribute access (``cfg.SOLVER.BASE_LR``), nested ``CfgNode`` for sub-sections."""

    def __init__(self, data: dict | None = None):
        super().__init__()
        for key, value in (data or {}).items():
            self[key] = CfgNode(value) if isinstance(value, dict) else value

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def to_dict(self) -> dict:
        """Plain nested dicts (lists stay lists), e.g. for YAML dumping."""
        return {k: v.to_dict() if isinstance(v, CfgNode) else copy.deepcopy(v) for k, v in self.items()}

    def dump(self) -> str:
        """The config as YAML text that :func:`load_config` reads back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def get_path(self, dotted: str) -> Any:
        """``cfg.get_path("SOLVER.BASE_LR")``."""
        node: Any = self
        for part in dotted.split("."):
            node = node[part]
        return node


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``: the message names ``key``, the value,
    the allowed values and the closest one, e.g. ``MODEL.FPN.NORM 'gn' is not one of [...]; did you mean 'GN'?``."""
    if value in choices:
        return
    by_lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1, cutoff=0.5)
    hint = f"; did you mean {by_lower[close[0]]!r}?" if close else ""
    raise ConfigError(f"{key} {value!r} is not one of {list(choices)}{hint}")
