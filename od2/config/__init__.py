"""Config: typed defaults, YAML files with ``_BASE_`` inheritance, ``KEY=VALUE`` overrides, packaged configs by name."""

from .config import CfgNode, ConfigError, get_cfg, load_config, parse_overrides
from .named_configs import config_names, resolve_config

__all__ = ["CfgNode", "ConfigError", "config_names", "get_cfg", "load_config", "parse_overrides", "resolve_config"]
