"""Config: the schema (typed core defaults plus the sections that backbone and neck registrations own), YAML files
with ``_BASE_`` inheritance, ``KEY=VALUE`` overrides, packaged configs by name."""

from od2.utils.cfg_node import CfgNode, ConfigError, check_choice

from .config import get_cfg, load_config, parse_overrides, schema
from .named_configs import config_names, resolve_config

__all__ = ["CfgNode", "ConfigError", "check_choice", "config_names", "get_cfg", "load_config", "parse_overrides",
           "resolve_config", "schema"]
