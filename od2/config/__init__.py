"""Config: typed defaults, YAML files with ``_BASE_`` inheritance, ``KEY=VALUE`` overrides."""

from .config import CfgNode, ConfigError, check_choice, get_cfg, load_config, parse_overrides, schema

__all__ = ["CfgNode", "ConfigError", "check_choice", "get_cfg", "load_config", "parse_overrides", "schema"]
