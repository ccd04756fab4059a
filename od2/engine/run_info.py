"""``run.json`` in a run folder: which config file and overrides ``od2 train`` started the run from.

``config.yaml`` holds the resolved config but not where it came from; tools that describe runs (``od2 report``)
read the run's name here instead of parsing log lines.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

RUN_INFO = "run.json"


def write_run_info(output_dir: str | os.PathLike, config_file: str | os.PathLike, overrides: list[str]) -> Path:
    """Record the run's config file, its ``KEY=VALUE`` overrides and the command line in ``output_dir/run.json``."""
    path = Path(output_dir) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"config_file": str(config_file), "overrides": list(overrides), "argv": list(sys.argv)}
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def read_run_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's ``run.json`` as a dict, or None when it has none or it is unreadable."""
    path = Path(folder) / RUN_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def run_name(folder: str | os.PathLike) -> str:
    """The stem of the config file the run was trained from, else the folder's name."""
    info = read_run_info(folder)
    if info and info.get("config_file"):
        return Path(str(info["config_file"])).stem
    return Path(folder).name
