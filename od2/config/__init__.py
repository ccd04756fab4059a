"""Config: the schema (typed core defaults plus the sections that backbone and neck registrations own), YAML files
with ``_BASE_`` inheritance, ``KEY=VALUE`` overrides."""

from od2.utils.cfg_node import CfgNode, ConfigError, check_choice

from .config import get_cfg, load_config, parse_overrides, schema

__all__ = ["CfgNode", "ConfigError", "check_choice", "get_cfg", "load_config", "parse_overrides", "schema"]
