"""A run folder's record: ``run.json`` (which config file and overrides ``od2 train`` started the run from),
``config.yaml`` (the resolved config of the latest start) and ``configs/config_<time>.yaml`` (one per start).

``config.yaml`` holds the resolved config but not where it came from; tools that describe runs (``od2 report``)
read the run's name here instead of parsing log lines. The trainer writes the record only once a resume has
succeeded, so a failed one leaves the folder describing the run that happened.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from od2.utils.atomic_write import atomic_write

RUN_INFO = "run.json"
CONFIG = "config.yaml"
CONFIG_HISTORY = "configs"


def write_config_record(output_dir: str | os.PathLike, config_yaml: str) -> Path:
    """Write the resolved config of this start to ``output_dir/config.yaml`` and to a new
    ``output_dir/configs/config_<YYYYmmdd-HHMMSS>.yaml`` (``_2``, ... after a start in the same second), so that
    the configs of the starts before a resume stay readable. Returns the dated copy."""
    history = Path(output_dir) / CONFIG_HISTORY
    history.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dated, n = history / f"config_{stamp}.yaml", 1
    while dated.exists():
        n += 1
        dated = history / f"config_{stamp}_{n}.yaml"
    for path in (dated, Path(output_dir) / CONFIG):
        with atomic_write(path) as tmp:
            tmp.write_text(config_yaml)
    return dated


def write_run_info(output_dir: str | os.PathLike, config_file: str | os.PathLike, overrides: list[str],
                   resume: bool = False) -> Path:
    """Record the run's config file, its ``KEY=VALUE`` overrides and the command line in ``output_dir/run.json``.

    A resumed run keeps the record of the start (it may be resumed from its own ``config.yaml``)."""
    path = Path(output_dir) / RUN_INFO
    if resume and path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"config_file": str(config_file), "overrides": list(overrides), "argv": list(sys.argv)}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
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
    """The stem of the config file the run was trained from, else the folder's name.

    Folders written before run.json existed name their config only in the line ``od2 train`` logs at its start
    (``... INFO: config PATH with overrides [...]``); that line is read for them.
    """
    info = read_run_info(folder)
    if info and info.get("config_file"):
        return Path(str(info["config_file"])).stem
    return _config_in_log(Path(folder) / "log.txt") or Path(folder).name


def _config_in_log(log: Path) -> str | None:
    try:
        with log.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                match = re.search(r"\] INFO: config (.+) with overrides ", line)
                if match:
                    return Path(match.group(1)).stem
    except OSError:
        return None
    return None
