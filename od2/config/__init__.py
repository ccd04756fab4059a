"""Config: typed defaults, YAML files with ``_BASE_`` inheritance, ``KEY=VALUE`` overrides."""

from .config import CfgNode, ConfigError, get_cfg, load_config, parse_overrides

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_config", "parse_overrides"]
