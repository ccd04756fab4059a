"""A run folder's record: ``run.json`` (which config file and overrides ``od2 train`` started the run from),
``config.yaml`` (the resolved config of the latest start) and ``configs/config_<time>.yaml`` (one per start).

``config.yaml`` holds the resolved config but not where it came from; tools that describe runs (``od2 report``)
read the run's name here instead of parsing log lines. The trainer writes the record only once a resume has
succeeded, so a failed one leaves the folder describing the run that happened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from od2.utils.atomic_write import atomic_write

from .checkpoint import LAST_CHECKPOINT

RUN_INFO = "run.json"
CONFIG = "config.yaml"
CONFIG_HISTORY = "configs"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
logger = logging.getLogger(__name__)


def run_files(output_dir: str | os.PathLike) -> list[Path]:
    """What a start afresh (``--overwrite``) deletes in ``output_dir``: the checkpoints (``model_*.pth``),
    ``last_checkpoint``, ``metrics.jsonl`` and ``tensorboard/``; the config history and log.txt stay."""
    output_dir = Path(output_dir)
    named = [output_dir / name for name in (LAST_CHECKPOINT, METRICS, TENSORBOARD)]
    return sorted(output_dir.glob("model_*.pth")) + [p for p in named if p.exists()]


def delete_run_files(paths: list[Path]) -> None:
    """Delete the files and folders of :func:`run_files`."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def drop_metrics_after(output_dir: str | os.PathLike, iteration: int) -> None:
    """Keep the records of ``output_dir/metrics.jsonl`` up to ``iteration`` (steps done) and drop the later ones,
    which a resume from ``iteration`` writes again, and a torn last line of a killed run; atomically."""
    path = Path(output_dir) / METRICS
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            keep = json.loads(line)["iteration"] <= iteration
        except (ValueError, KeyError, TypeError):
            keep = False
        kept += [line] if keep else []
        dropped += not keep
    if dropped:
        with atomic_write(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))
        logger.info("%s: dropped %d records after iteration %d (the resume writes them again)", path, dropped,
                    iteration)


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
