"""Loading, merging and validating od2 configs.

A config file is YAML (read with ``yaml.safe_load``) holding a subset of the keys in
:mod:`od2.config.defaults`. ``_BASE_: other.yaml`` (relative to the file, else a packaged config's name) is merged
first, recursively.
Command-line overrides are ``KEY=VALUE`` strings whose VALUE is parsed as YAML (``SOLVER.STEPS=[100,200]``).
Every key must exist in the defaults and every value must have the default's type; a mistake raises
:class:`ConfigError` naming the key (and the file) and suggesting the closest valid key. A retired key
(``RETIRED_KEYS``) is ignored with a logged warning that says what replaced it, so that old configs and run
folders still load.

The defaults are :data:`od2.config.defaults.DEFAULTS` plus the section of every registered backbone family and
neck, which their registrations in od2.modeling own (:func:`schema`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import logging
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from od2.utils.cfg_node import CfgNode, ConfigError

from .defaults import DEFAULTS, RETIRED_KEYS
from .named_configs import resolve_config

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"
# Floats in exponent form without a dot ("1e-4"), which YAML 1.1 (PyYAML) leaves as strings.
_YAML11_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@functools.cache
def schema() -> dict[str, Any]:
    """Every config key with its default: :data:`DEFAULTS` with the section of each registered backbone family
    inserted after ``MODEL.BACKBONE`` and of each neck after ``MODEL.NECK`` (their registrations in
    ``od2.modeling.backbones.BACKBONES`` / ``od2.modeling.necks.NECKS`` own them, so adding a backbone or neck is
    one edit). Shared and cached: read it, copy it (:func:`get_cfg`) before changing anything.
    """
    # Read on the first call, so that importing od2.config stays light (no torch).
    from od2.modeling.build import config_sections

    backbone_sections, neck_sections = config_sections()
    added = [*backbone_sections, *neck_sections]
    clashes = sorted({name for name in added if added.count(name) > 1 or name in DEFAULTS["MODEL"]})
    if clashes:
        raise ValueError(f"registered config sections {clashes} clash with each other or with od2's MODEL keys")
    sections_after = {"BACKBONE": backbone_sections, "NECK": neck_sections}
    model: dict[str, Any] = {}
    for key, value in DEFAULTS["MODEL"].items():
        model[key] = value
        model.update(sections_after.get(key, {}))
    return {**DEFAULTS, "MODEL": model}


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return CfgNode(copy.deepcopy(schema()))


def _all_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, dict):
            keys.extend(_all_keys(value, full + "."))
    return keys


def _unknown_key_error(full_key: str, source: str) -> ConfigError:
    candidates = _all_keys(schema())
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


def merge_into(cfg: dict, new: dict, source: str, defaults: dict | None = None, prefix: str = "") -> None:
    """Merge ``new`` into ``cfg`` in place, validating keys and types against ``defaults`` (the whole
    :func:`schema` unless given)."""
    if defaults is None:
        defaults = schema()
    for key, value in new.items():
        full_key = f"{prefix}{key}"
        if full_key in RETIRED_KEYS:
            logger.warning("%s: config key %r is no longer used and is ignored: %s", source, full_key,
                           RETIRED_KEYS[full_key])
            continue
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
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
