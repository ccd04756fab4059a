"""The sweep spec (``od2 sweep SPEC.yaml``): read, check and turn into one planned run per (arm, seed).

A spec names a base config, shared overrides (the budget), arms, seeds and an output root::

    base: configs/bccd/retinanet_lite0.yaml
    overrides: [SOLVER.MAX_ITER=440]
    arms:
      base: []
      giou: [MODEL.RETINANET.BBOX_REG_LOSS_TYPE=giou]
      bifpn: {config: configs/bccd/EfficientDet-Lite0.yaml, overrides: [...], step_seconds: 1.8}
    seeds: [1, 2, 3]
    output: output/sweeps/bccd-giou

Relative paths (``base``, an arm's ``config``, ``output``) are taken from the current directory, as ``od2 train
--config`` and ``OUTPUT_DIR`` are; a config may also be a packaged name (``coco/RetinaNet-GN``). docs/sweeps.md is
the reference of every key.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from od2.config import load_config
from od2.config.named_configs import resolve_config
from od2.utils.cfg_node import ConfigError

TOP_LEVEL_KEYS = ("base", "overrides", "arms", "seeds", "output", "executor", "slurm", "gpus_per_run",
                  "step_seconds", "step_source")
ARM_KEYS = ("config", "overrides", "gpus_per_run", "step_seconds", "step_source")
SLURM_KEYS = ("partition", "gpus_per_run", "cpus_per_task", "timeout_min", "mem_gb", "account", "qos", "constraint",
              "setup")
EXECUTORS = ("local", "slurm")
# The sweep sets these per run: a spec that sets them would make every seed's run the same run or folder.
RESERVED_KEYS = ("SEED", "OUTPUT_DIR")
OVERRIDE = re.compile(r"^(?P<key>[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*)=(?P<value>.*)$", re.DOTALL)
ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Arm:
    """One arm: the config it starts from and its overrides (after the spec's shared ones)."""

    name: str
    config: str
    overrides: tuple[str, ...]
    gpus_per_run: int | None = None  # None: the spec does not say (one process, no GPU-hours in the plan)
    step_seconds: float | None = None
    step_source: str | None = None

    @property
    def processes(self) -> int:
        """Training processes of one run: one per GPU."""
        return self.gpus_per_run or 1


@dataclass(frozen=True)
class SweepSpec:
    """A checked spec. ``path``: the spec file; ``output``: the sweep folder (absolute); ``arms`` in spec order,
    the first being the reference arm for paired differences (``base`` when there is one, see ``reference_arm``)."""

    path: Path
    base: str
    overrides: tuple[str, ...]
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    output: Path
    executor: str = "local"
    slurm: dict[str, Any] = field(default_factory=dict)
    step_seconds: float | None = None
    step_source: str | None = None

    @property
    def reference_arm(self) -> str:
        names = [arm.name for arm in self.arms]
        return "base" if "base" in names else names[0]

    def as_json(self) -> dict[str, Any]:
        """The spec as loaded, paths resolved: what sweep.json records."""
        return {
            "base": self.base, "overrides": list(self.overrides), "seeds": list(self.seeds),
            "output": str(self.output), "executor": self.executor, "slurm": dict(self.slurm),
            "step_seconds": self.step_seconds, "step_source": self.step_source, "reference_arm": self.reference_arm,
            "arms": {arm.name: {"config": arm.config, "overrides": list(arm.overrides),
                                "gpus_per_run": arm.gpus_per_run, "step_seconds": arm.step_seconds,
                                "step_source": arm.step_source} for arm in self.arms},
        }


@dataclass(frozen=True)
class PlannedRun:
    """One (arm, seed) run: the folder ``<output>/<arm>/seed<N>`` and the config arguments that make it."""

    arm: Arm
    seed: int
    folder: Path
    max_iter: int
    shared_overrides: tuple[str, ...] = ()
    num_workers: int = 0  # the config's DATALOADER.NUM_WORKERS, which the local executor splits between jobs

    @property
    def relative_dir(self) -> str:
        return f"{self.arm.name}/seed{self.seed}"

    @property
    def config_args(self) -> list[str]:
        """``--config CONFIG KEY=VALUE...`` for ``od2 train`` and ``od2 eval``: the shared overrides, then the
        arm's (which win), then the seed and the run folder."""
        return ["--config", self.arm.config, *self.shared_overrides, *self.arm.overrides, f"SEED={self.seed}",
                f"OUTPUT_DIR={self.folder}"]


def _error(spec_file: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{spec_file}: {key}: {problem}")


def _closest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_keys(spec_file: Path, where: str, data: dict, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            name = f"{where}.{key}" if where else str(key)
            raise _error(spec_file, name, f"unknown key (allowed: {', '.join(allowed)}){_closest(str(key), allowed)}")


def _overrides(spec_file: Path, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _error(spec_file, where, f"must be a list of KEY=VALUE strings, got {value!r}")
    for item in value:
        match = OVERRIDE.match(item) if isinstance(item, str) else None
        if match is None:
            raise _error(spec_file, where, f"{item!r} is not a KEY=VALUE config override (e.g. SOLVER.MAX_ITER=400)")
        if match["key"] in RESERVED_KEYS:
            raise _error(spec_file, where, f"{item!r}: the sweep sets {match['key']} for each run itself")
    return tuple(value)


def _positive_number(spec_file: Path, where: str, value: Any, kind: type = float) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or \
            (kind is int and not isinstance(value, int)):
        raise _error(spec_file, where, f"must be a positive {'integer' if kind is int else 'number'}, got {value!r}")
    return kind(value)


def _config_path(spec_file: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _error(spec_file, where, f"must name a config file, got {value!r}")
    try:
        return str(resolve_config(value))
    except FileNotFoundError as exc:
        raise _error(spec_file, where, str(exc)) from exc


def _arm(spec_file: Path, name: Any, value: Any, default_gpus: int | None) -> Arm:
    where = f"arms.{name}"
    if not isinstance(name, str) or not ARM_NAME.match(name):
        raise _error(spec_file, where, "an arm name is a folder name: letters, digits, '_', '.', '-'")
    if isinstance(value, dict):
        _check_keys(spec_file, where, value, ARM_KEYS)
        config = value.get("config")
        return Arm(name, config, _overrides(spec_file, f"{where}.overrides", value.get("overrides")),
                   _positive_number(spec_file, f"{where}.gpus_per_run", value.get("gpus_per_run"), int)
                   or default_gpus,
                   _positive_number(spec_file, f"{where}.step_seconds", value.get("step_seconds")),
                   value.get("step_source"))
    return Arm(name, None, _overrides(spec_file, where, value), default_gpus)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec (keys, arms, seeds; not yet the config keys: :func:`plan_runs` loads them).

    Raises:
        ConfigError: naming the spec file and the key at fault.
        FileNotFoundError: the spec or a config it names is missing.
    """
    spec_file = Path(path)
    if not spec_file.is_file():
        raise FileNotFoundError(f"sweep spec {spec_file} not found")
    try:
        data = yaml.safe_load(spec_file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{spec_file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{spec_file}: a sweep spec is a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    _check_keys(spec_file, "", data, TOP_LEVEL_KEYS)
    for key in ("base", "arms", "seeds", "output"):
        if key not in data:
            raise _error(spec_file, key, "missing (a spec needs base, arms, seeds and output)")
    base = _config_path(spec_file, "base", data["base"])

    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise _error(spec_file, "slurm", f"must be a mapping of {', '.join(SLURM_KEYS)}")
    _check_keys(spec_file, "slurm", slurm, SLURM_KEYS)
    default_gpus = _positive_number(spec_file, "gpus_per_run", data.get("gpus_per_run"), int) or \
        _positive_number(spec_file, "slurm.gpus_per_run", slurm.get("gpus_per_run"), int)

    arms_data = data["arms"]
    if not isinstance(arms_data, dict) or not arms_data:
        raise _error(spec_file, "arms", "must be a non-empty mapping of arm name -> overrides or {config, overrides}")
    arms = []
    for name, value in arms_data.items():
        arm = _arm(spec_file, name, value, default_gpus)
        config = _config_path(spec_file, f"arms.{name}.config", arm.config) if arm.config is not None else base
        arms.append(Arm(arm.name, config, arm.overrides, arm.gpus_per_run, arm.step_seconds, arm.step_source))

    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise _error(spec_file, "seeds", f"must be a non-empty list of integers, got {seeds!r}")
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise _error(spec_file, "seeds", f"seed {duplicates[0]} is listed twice (each seed is one run per arm)")

    output = data["output"]
    if not isinstance(output, str) or not output:
        raise _error(spec_file, "output", f"must be a folder, got {output!r}")
    executor = data.get("executor", "local")
    if executor not in EXECUTORS:
        raise _error(spec_file, "executor", f"{executor!r} is not one of {list(EXECUTORS)}"
                     f"{_closest(str(executor), EXECUTORS)}")
    return SweepSpec(spec_file.resolve(), base, _overrides(spec_file, "overrides", data.get("overrides")),
                     tuple(arms), tuple(seeds), Path(output).resolve(), executor, dict(slurm),
                     _positive_number(spec_file, "step_seconds", data.get("step_seconds")), data.get("step_source"))


def plan_runs(spec: SweepSpec) -> list[PlannedRun]:
    """One run per (arm, seed), arms in spec order. Each arm's config is loaded once here (config file, shared
    overrides, arm overrides), so an unknown key or bad value stops the sweep before anything trains.

    Raises:
        ConfigError: naming the spec file, the arm and the problem.
    """
    runs = []
    for arm in spec.arms:
        try:
            cfg = load_config(arm.config, [*spec.overrides, *arm.overrides])
        except (ConfigError, FileNotFoundError) as exc:
            raise _error(spec.path, f"arms.{arm.name}", str(exc)) from exc
        for seed in spec.seeds:
            runs.append(PlannedRun(arm, seed, spec.output / arm.name / f"seed{seed}", int(cfg.SOLVER.MAX_ITER),
                                   spec.overrides, int(cfg.DATALOADER.NUM_WORKERS)))
    return runs
