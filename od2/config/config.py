"""Loading, merging and validating od2 configs.

A config file is YAML (read with ``yaml.safe_load``) holding a subset of the keys in
:mod:`od2.config.defaults`. ``_BASE_: other.yaml`` (relative to the file, else a packaged config's name) is merged
first, recursively.
Command-line overrides are ``KEY=VALUE`` strings whose VALUE is parsed as YAML (``SOLVER.STEPS=[100,200]``).
Every key must exist in the defaults and every value must have the default's type; a mistake raises
:class:`ConfigError` naming the key (and the file) and suggesting the closest valid key.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from .defaults import DEFAULTS
from .named_configs import resolve_config

BASE_KEY = "_BASE_"
# Floats in exponent form without a dot ("1e-4"), which YAML 1.1 (PyYAML) leaves as strings.
_YAML11_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return CfgNode(copy.deepcopy(DEFAULTS))


def _all_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, dict):
            keys.extend(_all_keys(value, full + "."))
    return keys


def _unknown_key_error(full_key: str, source: str) -> ConfigError:
    candidates = _all_keys(DEFAULTS)
    close = difflib.get_close_matches(full_key, candidates, n=3, cutoff=0.6)
    if not close:  # a misspelt leaf under a right section: compare leaf names
        leaf = full_key.rsplit(".", 1)[-1]
        by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6)]
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"{source}: unknown config key {full_key!r}.{hint}")


def _check_type(full_key: str, default: Any, value: Any, source: str) -> Any:
    """Return ``value`` coerced to the default's type, or raise ConfigError."""

    def fail() -> ConfigError:
        return ConfigError(
            f"{source}: config key {full_key!r} expects {type(default).__name__} "
            f"(default {default!r}) but got {type(value).__name__} {value!r}."
        )

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail()
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if isinstance(default, float):
        if isinstance(value, str) and _YAML11_EXP_FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads "1e-4" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise fail()
        return value
    if isinstance(default, (list, tuple)):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            if default and not isinstance(default[0], (list, tuple)) and not isinstance(value, dict):
                try:  # a scalar where a list is expected: MIN_SIZE_TRAIN=576, BBOX_REG_WEIGHTS=1
                    return [_check_type(full_key, default[0], value, source)]
                except ConfigError:
                    pass
            raise fail()
        if default:
            return [_check_type(f"{full_key}[{i}]", default[0], item, source) for i, item in enumerate(value)]
        return value
    raise fail()


def merge_into(cfg: dict, new: dict, source: str, defaults: dict = DEFAULTS, prefix: str = "") -> None:
    """Merge ``new`` into ``cfg`` in place, validating keys and types against ``defaults``."""
    for key, value in new.items():
        full_key = f"{prefix}{key}"
        if key not in defaults:
            raise _unknown_key_error(full_key, source)
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: config key {full_key!r} is a section; give a mapping, got {value!r}.")
            merge_into(cfg[key], value, source, default, full_key + ".")
        else:
            checked = _check_type(full_key, default, value, source)
            cfg[key] = CfgNode(checked) if isinstance(checked, dict) else checked


def _read_yaml_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict, str]]:
    """The chain of (mapping, source name) to merge for the existing file ``path``, bases first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _BASE_ cycle through {' -> '.join(str(p) for p in seen)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    chain: list[tuple[dict, str]] = []
    base = data.pop(BASE_KEY, None)
    if base:
        chain.extend(_read_yaml_with_bases(resolve_config(base, relative_to=path.parent), seen + (path,)))
    chain.append((data, str(path)))
    return chain


def parse_overrides(overrides: Iterable[str]) -> dict:
    """``["SOLVER.BASE_LR=0.01", "MODEL.FPN.NORM=GN"]`` -> nested dict with YAML-parsed values."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} must look like KEY=VALUE (e.g. SOLVER.BASE_LR=0.01)")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"command line: cannot parse value of {key!r}: {exc}") from exc
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> CfgNode:
    """Defaults, then the file chain (``_BASE_`` first), then ``KEY=VALUE`` overrides.

    ``path`` and every ``_BASE_`` may also name a config packaged with od2 (``coco/RetinaNet-GN``; see
    :mod:`od2.config.named_configs`) when no such file exists.
    """
    cfg = get_cfg()
    if path is not None:
        for data, source in _read_yaml_with_bases(resolve_config(path)):
            merge_into(cfg, data, source)
    merge_into(cfg, parse_overrides(overrides), "command line")
    return cfg
