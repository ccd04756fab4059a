"""The configs that ship inside the od2 package, found by name.

``od2/configs`` is the repository's ``configs/`` folder (a link in a checkout, real files in an installed wheel), so
``--config coco/RetinaNet-GN`` works after a plain ``pip install`` as ``--config configs/coco/RetinaNet-GN.yaml``
does in a clone. A path that exists always wins over a packaged config of the same name.
"""

from __future__ import annotations

import difflib
from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
SUFFIX = ".yaml"
# The README's commands spell packaged configs from the repository root: configs/<name>.yaml.
REPOSITORY_PREFIX = "configs/"
# Folders of configs/ that hold other YAML files than configs: od2 sweep's specs.
NOT_CONFIGS = ("sweeps",)


def config_names() -> list[str]:
    """Every packaged config as ``<folder>/<stem>`` (e.g. ``coco/RetinaNet-GN``), sorted."""
    return sorted(p.relative_to(CONFIGS_DIR).with_suffix("").as_posix() for p in CONFIGS_DIR.rglob(f"*{SUFFIX}")
                  if p.relative_to(CONFIGS_DIR).parts[0] not in NOT_CONFIGS)


def resolve_config(name: str | Path, relative_to: Path | None = None) -> Path:
    """The config file ``name`` means: the path itself (taken relative to ``relative_to`` when given, as for
    ``_BASE_``) if it exists, else the packaged config ``name``, with or without ``.yaml`` and a leading
    ``configs/``.

    Raises FileNotFoundError naming the closest packaged configs when neither exists.
    """
    path = (relative_to / name) if relative_to is not None else Path(name)
    if path.is_file():
        return path
    key = Path(name).as_posix().removeprefix(REPOSITORY_PREFIX).removesuffix(SUFFIX)
    packaged = CONFIGS_DIR / f"{key}{SUFFIX}"
    if packaged.is_file():
        return packaged
    names = config_names()
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"packaged configs: {', '.join(names)}"
    raise FileNotFoundError(f"config file not found: {path}, and od2 packages no config named {key!r} ({hint})")
